#!/usr/bin/env python3
"""An HTTPS server that takes TLS reports (RFC 8460 §5.2), for the tests.

    report_server.py ADDRESS CERT KEY DIR

Accepts POST on any path over TLS with CERT and KEY on ADDRESS:443 and
writes each body to DIR/<n>.body with its Content-Type in DIR/<n>.type,
answering 201. Prints "ready" once listening and "posted <n>" after each.
"""
import http.server
import os
import ssl
import sys
import threading

address, cert, key, root = sys.argv[1:5]
os.makedirs(root, exist_ok=True)
lock = threading.Lock()
count = [0]


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        with lock:
            count[0] += 1
            n = count[0]
        with open(os.path.join(root, f"{n}.body"), "wb") as f:
            f.write(body)
        with open(os.path.join(root, f"{n}.type"), "w") as f:
            f.write(self.headers.get("Content-Type") or "")
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()
        print(f"posted {n}", flush=True)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer((address, 443), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
