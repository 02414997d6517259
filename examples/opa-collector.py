#!/usr/bin/env python3
"""A minimal OPA decision-log collector for keygate, on Python's http.server.

It takes POST /logs (a gzip'd JSON array of events, as OPA and keygate send them), appends
each event's exact line to FILE once (events already stored, by seq, are retries and are
skipped), and answers 200. keygate sends one event per line of the array, so the lines are
recovered byte for byte and `keygate audit verify FILE` checks the copy.

    python3 opa-collector.py PORT FILE [TOKEN_FILE]

PORT 0 picks a free port; the address is printed. With TOKEN_FILE, requests must carry
"Authorization: Bearer <the file's first line>". An example, not a production collector.
"""
import gzip
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer

PORT, OUT = int(sys.argv[1]), sys.argv[2]
TOKEN = open(sys.argv[3]).readline().strip() if len(sys.argv) > 3 else None


def last_seq():
    if not os.path.exists(OUT):
        return 0
    last = 0
    with open(OUT) as f:
        for line in f:
            last = json.loads(line)["seq"]
    return last


class Collector(BaseHTTPRequestHandler):
    last = last_seq()

    def do_POST(self):
        if self.path != "/logs":
            return self.answer(404)
        if TOKEN and self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.answer(401)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        text = body.decode("utf-8")
        json.loads(text)  # a JSON array of events
        # "[", one event per line (each but the last ending in ","), "]"
        with open(OUT, "a") as out:
            for line in text.split("\n")[1:-1]:
                line = line.removesuffix(",")
                seq = json.loads(line)["seq"]
                if seq <= Collector.last:
                    continue
                out.write(line + "\n")
                Collector.last = seq
        self.answer(200)

    def answer(self, status):
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = HTTPServer(("127.0.0.1", PORT), Collector)
print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
