#!/usr/bin/env python3
"""A loopback HTTPS server for the tests: MTA-STS policies (RFC 8461 §3.3)
and TLS reports (RFC 8460 §5.2).

    policy_server.py ADDRESS CERT KEY DIR

GET /.well-known/mta-sts.txt answers with the file DIR/<Host header>.txt as
text/plain (404 without one). POST on any path writes the body to
DIR/posted/<n>.body and its Content-Type to DIR/posted/<n>.type, and
answers 201. TLS with CERT and KEY, on ADDRESS:443. Prints "ready" once
listening.
"""
import http.server
import os
import ssl
import sys
import threading

address, cert, key, root = sys.argv[1:5]
posted = os.path.join(root, "posted")
os.makedirs(posted, exist_ok=True)
lock = threading.Lock()
count = [0]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        path = os.path.join(root, host + ".txt")
        if self.path != "/.well-known/mta-sts.txt" or not os.path.isfile(path):
            self.send_error(404)
            return
        with open(path, "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:
            count[0] += 1
            n = count[0]
        with open(os.path.join(posted, f"{n}.type"), "w") as f:
            f.write(self.headers.get("Content-Type") or "")
        # The body last: once it is there, the POST is whole.
        with open(os.path.join(posted, f"{n}.body.tmp"), "wb") as f:
            f.write(body)
        os.rename(os.path.join(posted, f"{n}.body.tmp"), os.path.join(posted, f"{n}.body"))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()


server = http.server.ThreadingHTTPServer((address, 443), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
