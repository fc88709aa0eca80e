#!/usr/bin/env python3
"""A scripted SMTP receiver for delivery tests (loopback only).

    receiver.py --port P --dir D [--temp-once] [--reject-prefix bad] [--inject]

--temp-once      the first RCPT this server ever sees gets 451, later ones 250
--reject-prefix  RCPT local parts starting with this get 550 5.1.1
--temp-once-prefix  such a recipient gets 451 the first time, 250 after
--silent         accept connections and never answer
--inject         offer STARTTLS; answer it with 220 and, in the same write,
                 a forged 250 line (CVE-2011-0411 class), then hang up
--garbage-on-rset  answer RSET with a line that is no SMTP reply
Each accepted message is written to D/<n>.eml, envelope first. Prints
"ready" once listening.
"""
import argparse, os, socketserver, sys, threading

ap = argparse.ArgumentParser()
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--host", default="127.0.0.1")
ap.add_argument("--dir", required=True)
ap.add_argument("--temp-once", action="store_true")
ap.add_argument("--reject-prefix", default=None)
ap.add_argument("--temp-once-prefix", default=None)
ap.add_argument("--inject", action="store_true")
ap.add_argument("--silent", action="store_true")
ap.add_argument("--garbage-on-rset", action="store_true")
args = ap.parse_args()
os.makedirs(args.dir, exist_ok=True)
lock = threading.Lock()
state = {"rcpts_seen": 0, "messages": 0, "deferred": set()}


class Handler(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        if args.silent:
            # Accept and say nothing: the client must time out.
            self.rfile.read()
            return
        self.reply("220 receiver.test ESMTP scripted")
        sender, rcpts = None, []
        while True:
            raw = self.rfile.readline(4096)
            if not raw:
                return
            line = raw.decode("latin-1").rstrip("\r\n")
            verb = line.split(" ", 1)[0].upper()
            if verb == "EHLO":
                exts = ["receiver.test", "PIPELINING", "SIZE 10000000", "8BITMIME"]
                if args.inject:
                    exts.append("STARTTLS")
                for e in exts[:-1]:
                    self.wfile.write(("250-" + e + "\r\n").encode())
                self.reply("250 " + exts[-1])
            elif verb == "HELO":
                self.reply("250 receiver.test")
            elif verb == "STARTTLS" and args.inject:
                self.wfile.write(b"220 2.0.0 go ahead\r\n250 2.0.0 forged\r\n")
                self.wfile.flush()
                return
            elif verb == "MAIL":
                sender, rcpts = line[10:].strip(), []
                self.reply("250 2.1.0 ok")
            elif verb == "RCPT":
                rcpt = line[8:].strip()
                with lock:
                    state["rcpts_seen"] += 1
                    first = state["rcpts_seen"] == 1
                local = rcpt.strip("<>").split("@")[0]
                once = args.temp_once_prefix and local.startswith(args.temp_once_prefix)
                with lock:
                    first_for_addr = once and rcpt not in state["deferred"]
                    if first_for_addr:
                        state["deferred"].add(rcpt)
                if first_for_addr:
                    self.reply("451 4.3.0 not yet, %s" % rcpt)
                elif args.temp_once and first:
                    self.reply("451 4.3.0 try again later")
                elif args.reject_prefix and local.startswith(args.reject_prefix):
                    self.reply("550 5.1.1 no such user here")
                else:
                    rcpts.append(rcpt)
                    self.reply("250 2.1.5 ok")
            elif verb == "DATA":
                if not rcpts:
                    self.reply("554 5.5.1 no valid recipients")
                    continue
                self.reply("354 go ahead")
                body = []
                while True:
                    raw = self.rfile.readline(65536)
                    if not raw or raw == b".\r\n":
                        break
                    body.append(raw[1:] if raw.startswith(b"..") else raw)
                with lock:
                    state["messages"] += 1
                    n = state["messages"]
                with open(os.path.join(args.dir, "%d.eml" % n), "wb") as f:
                    f.write(("X-Env-From: %s\r\nX-Env-To: %s\r\n" % (sender, ",".join(rcpts))).encode())
                    f.write(b"".join(body))
                self.reply("250 2.0.0 accepted as %d" % n)
                print("delivered %d" % n, flush=True)
            elif verb == "RSET" and args.garbage_on_rset:
                self.reply("ok then")
            elif verb == "RSET":
                sender, rcpts = None, []
                self.reply("250 2.0.0 ok")
            elif verb == "QUIT":
                self.reply("221 2.0.0 bye")
                return
            else:
                self.reply("502 5.5.1 not implemented")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


with Server((args.host, args.port), Handler) as srv:
    print("ready", flush=True)
    srv.serve_forever()
