"""A loopback OpenAI-compatible evaluator with known answers, for the CI round of
.ci/prefs.sh: a real HTTP server that `safetyj prefs score` talks to, answering each
meta-evaluation prompt by fixed rules that check.py applies again on its own.

Rules: AIU extraction → the critique's first three non-empty pieces (split at
'.' and line breaks), one per line; a recall or precision check → "Correct" when the claim has an
even number of characters, else "Incorrect". Prints its port, then serves forever.
"""
import json
import re
from http.server import BaseHTTPRequestHandler, HTTPServer


def sentences(text):
    return [s.strip() for s in re.split(r"[.\n]", text) if s.strip()][:3]


def claim_is_correct(claim):
    return len(claim) % 2 == 0


def answer(content):
    if content.rstrip().endswith("Claims:"):
        critique = content.rsplit("Comment:\n", 1)[-1].rsplit("\nClaims:", 1)[0].strip()
        return "\n".join(f"{i + 1}. {s}" for i, s in enumerate(sentences(critique)))
    claim = content.rsplit("<claim>\n", 1)[-1].strip()
    verdict = "Correct" if claim_is_correct(claim) else "Incorrect"
    return f"<Analysis Start>\nscripted\n<Analysis End>\n\n<Answer Start>\n{verdict}\n<Answer End>"


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        content = body["messages"][-1]["content"]
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer(content)}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = HTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
