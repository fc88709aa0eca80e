#!/usr/bin/env python3
"""An HTTPS server for MTA-STS policies (RFC 8461 §3.3), for the tests.

    policy_server.py ADDRESS CERT KEY DIR

Serves GET /.well-known/mta-sts.txt with the file DIR/<Host header>.txt as
text/plain (404 without one), over TLS with CERT and KEY, on ADDRESS:443.
Prints "ready" once listening; logs each request to stderr.
"""
import http.server
import os
import ssl
import sys

address, cert, key, root = sys.argv[1:5]


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


server = http.server.ThreadingHTTPServer((address, 443), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
print("ready", flush=True)
server.serve_forever()
