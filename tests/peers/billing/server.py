"""A strict HL7 v2.5.1 billing receiver for Hearth's tests (MLLP over TCP on loopback).

Usage: server.py --port N (0: any; prints "ready <port>" when listening) --log FILE
                 [--refuse-code CODE=REASON ...]

For each MLLP frame (0x0B ... 0x1C 0x0D) it answers one ACK:
- AR when the message is not a valid DFT^P03 in HL7 v2.5.1: hl7apy 1.3.5 parses it at
  VALIDATION_LEVEL.STRICT and validates it (datatypes, required fields, cardinality), and this
  peer adds what hl7apy 1.3.5 does not check: the order of the segments against hl7apy's own
  DFT_P03 structure (groups included), and the 2.5.1 maximum lengths of the fields Hearth sends
  (hl7apy's v2.5.1 tables carry no lengths: a 21-character MSH-10 passes its validate()).
- AE when an FT1 carries a procedure code refused with --refuse-code (a payer rule).
- AA otherwise. A repeat of an accepted MSH-10 answers AA again and is logged as a duplicate.

Every message received is appended to --log as one JSON line:
{control_id, ack, reason, duplicate, message, segments}, where `segments` is the message as
this peer reads it: [{id, fields: [[[[subcomponent, ...] per component] per repetition]
per field]}], each value unescaped by python-hl7 0.4.5 (an implementation independent of
Hearth's).
"""

import argparse
import hashlib
import asyncio
import datetime
import json
import re
import sys

import hl7
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message
from hl7apy.v2_5_1 import messages as v251_messages

START, END = b"\x0b", b"\x1c\x0d"
MAX_FRAME = 1 << 20

# HL7 v2.5.1 maximum field lengths (chapter 2 MSH, chapter 3 EVN/PID/PV1, chapter 6 FT1/DG1),
# checked per repetition on the field as sent (escape sequences included).
LENGTHS = {
    "MSH": {3: 227, 4: 227, 5: 227, 6: 227, 7: 26, 8: 40, 9: 15, 10: 20, 11: 3, 12: 60,
            13: 15, 14: 180, 15: 2, 16: 2, 17: 3, 18: 16, 19: 250, 20: 20, 21: 427},
    "EVN": {1: 3, 2: 26, 3: 26, 4: 3, 5: 250, 6: 26, 7: 241},
    "PID": {1: 4, 2: 20, 3: 250, 4: 20, 5: 250, 6: 250, 7: 26, 8: 1, 18: 250, 19: 16},
    "PV1": {1: 4, 2: 1, 3: 80, 7: 250, 8: 250, 9: 250, 10: 3, 17: 250, 18: 2, 19: 250,
            44: 26, 45: 26},
    "FT1": {1: 4, 2: 12, 3: 10, 4: 53, 5: 26, 6: 8, 7: 250, 8: 40, 9: 40, 10: 6, 11: 12,
            12: 12, 13: 250, 14: 250, 15: 12, 16: 80, 17: 1, 18: 2, 19: 250, 20: 250,
            21: 250, 22: 12, 23: 427, 24: 250, 25: 250, 26: 250},
    "DG1": {1: 4, 2: 2, 3: 250, 4: 40, 5: 26, 6: 2, 15: 2, 16: 250},
}


def structure_regex(node):
    """A regular expression over "SEG\\n" tokens for one of hl7apy's message structures."""
    parts = []
    for name, sub, (low, high), kind in node[1]:
        p = name + r"\n" if kind == "SEG" else "(?:" + structure_regex(sub) + ")"
        if (low, high) == (0, 1):
            p = "(?:" + p + ")?"
        elif (low, high) == (0, -1):
            p = "(?:" + p + ")*"
        elif (low, high) == (1, -1):
            p = "(?:" + p + ")+"
        parts.append(p)
    return "".join(parts)


DFT_P03 = re.compile(structure_regex(v251_messages.MESSAGES["DFT_P03"]))


class Refused(Exception):
    def __init__(self, ack, reason, location="", error_code="207^Application internal error^HL70357"):
        super().__init__(reason)
        self.ack, self.reason, self.location, self.error_code = ack, reason, location, error_code


def split_segments(text):
    return [s for s in re.split(r"\r\n|\r|\n", text) if s]


def delimiters(segments):
    if not segments or not segments[0].startswith("MSH") or len(segments[0]) < 8:
        raise Refused("AR", "the message does not start with an MSH segment")
    field, enc = segments[0][3], segments[0][4:8]
    if len(set(field + enc)) != 5 or (len(segments[0]) > 8 and segments[0][8] != field):
        raise Refused("AR", "MSH-1/MSH-2 do not hold five distinct delimiters")
    return field, enc[0], enc[1], enc[2], enc[3]


def raw_fields(segment, field_sep):
    """The segment's fields as sent; index n is field n (MSH-1 is the field separator)."""
    parts = segment.split(field_sep)
    if parts[0] == "MSH":
        return ["MSH", field_sep] + parts[1:]
    return parts


def decoded(segments, seps, unescaper):
    field_sep, comp, rep, _esc, sub = seps
    out = []
    for seg in segments:
        fields = raw_fields(seg, field_sep)
        decoded_fields = []
        for n, f in enumerate(fields[1:], start=1):
            if fields[0] == "MSH" and n <= 2:
                decoded_fields.append([[[f]]])
                continue
            decoded_fields.append([
                [[unescaper.unescape(s) if s else "" for s in c.split(sub)] for c in r.split(comp)]
                for r in f.split(rep)
            ])
        out.append({"id": fields[0], "fields": decoded_fields})
    return out


def escape(text, seps):
    field_sep, comp, rep, esc, sub = seps
    out = []
    for ch in text:
        code = {field_sep: "F", comp: "S", rep: "R", esc: "E", sub: "T"}.get(ch)
        if code:
            out.append(esc + code + esc)
        elif ch == "\r":
            out.append(esc + "X0D" + esc)
        elif ch == "\n":
            out.append(esc + "X0A" + esc)
        else:
            out.append(ch)
    return "".join(out)


class Peer:
    def __init__(self, log_path, refuse):
        self.log_path = log_path
        self.refuse = refuse
        self.accepted = {}
        self.acks = 0

    def check(self, text, segments, seps):
        field_sep, comp = seps[0], seps[1]
        # Data never holds a raw control character (CR ends a segment; the rest are escaped
        # as \Xhh\, HL7 v2.5.1 2.7.5): NUL or MLLP's framing bytes inside a field are refused.
        for seg in segments:
            bad = [c for c in seg if ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F]
            if bad:
                raise Refused("AR", "%s holds a raw control character (0x%02X)" % (seg[:3], ord(bad[0])),
                              error_code="102^Data type error^HL70357")
        # Without MSH-18 a message is ASCII (2.15.9.18); anything else must say UNICODE UTF-8.
        msh18 = raw_fields(segments[0], field_sep)
        msh18 = msh18[18] if len(msh18) > 18 else ""
        if any(ord(c) > 0x7F for c in text) and msh18 != "UNICODE UTF-8":
            raise Refused("AR", "non-ASCII text without MSH-18 UNICODE UTF-8",
                          location="MSH^1^18", error_code="102^Data type error^HL70357")
        ids = [s[:3] for s in segments]
        if not DFT_P03.fullmatch("".join(i + "\n" for i in ids)):
            raise Refused("AR", "segment sequence is not a DFT^P03 (v2.5.1): " + " ".join(ids),
                          error_code="100^Segment sequence error^HL70357")
        for seg in segments:
            fields = raw_fields(seg, field_sep)
            limits = LENGTHS.get(fields[0], {})
            for n, f in enumerate(fields):
                if n in limits and any(len(r) > limits[n] for r in f.split(seps[2])):
                    raise Refused("AR", "%s-%d is longer than %d characters" % (fields[0], n, limits[n]),
                                  location="%s^1^%d" % (fields[0], n),
                                  error_code="102^Data type error^HL70357")
        msh = raw_fields(segments[0], field_sep)
        if len(msh) <= 12 or msh[9] != comp.join(["DFT", "P03", "DFT_P03"]) or msh[12] != "2.5.1":
            raise Refused("AR", "MSH-9 must be DFT^P03^DFT_P03 and MSH-12 2.5.1",
                          error_code="200^Unsupported message type^HL70357")
        try:
            msg = parse_message("\r".join(segments) + "\r",
                                validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
            if msg.name != "DFT_P03":
                raise Refused("AR", "hl7apy read a %s, not a DFT_P03" % msg.name)
            msg.validate()
        except Refused:
            raise
        except Exception as e:  # hl7apy's parse and validation errors
            raise Refused("AR", "hl7apy strict v2.5.1: %s: %s" % (type(e).__name__, e),
                          error_code="102^Data type error^HL70357")
        for n, seg in enumerate(s for s in segments if s.startswith("FT1")):
            fields = raw_fields(seg, field_sep)
            for idx in (25, 7):
                code = fields[idx].split(comp)[0] if len(fields) > idx else ""
                if code in self.refuse:
                    raise Refused("AE", self.refuse[code], location="FT1^%d^%d" % (n + 1, idx))

    def handle(self, text):
        segments = split_segments(text)
        seps, control_id, decoded_segments = None, "", None
        duplicate = False
        try:
            seps = delimiters(segments)
            msh = raw_fields(segments[0], seps[0])
            control_id = msh[10] if len(msh) > 10 else ""
            decoded_segments = decoded(segments, seps, hl7.parse("MSH" + "".join(seps[:5]) + "\r"))
            # Dedupe on MSH-10: a resent message that was accepted is not processed again;
            # the same control id on a different message is refused (it is not a resend).
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            duplicate = control_id in self.accepted
            if duplicate and self.accepted[control_id] != digest:
                raise Refused("AR", "MSH-10 %s was accepted for a different message" % control_id,
                              location="MSH^1^10", error_code="207^Application internal error^HL70357")
            if not duplicate:
                self.check(text, segments, seps)
            ack, reason, location, error_code = "AA", "", "", ""
            self.accepted[control_id] = digest
        except Refused as r:
            ack, reason, location, error_code = r.ack, r.reason, r.location, r.error_code
        with open(self.log_path, "a", encoding="utf-8") as log:
            log.write(json.dumps({"control_id": control_id, "ack": ack, "reason": reason,
                                  "duplicate": duplicate, "message": text,
                                  "segments": decoded_segments}) + "\n")
        return self.ack(segments, seps, control_id, ack, reason, location, error_code)

    def ack(self, segments, seps, control_id, code, reason, location, error_code):
        seps = seps or ("|", "^", "~", "\\", "&")
        f = seps[0]
        msh = raw_fields(segments[0], f) if segments and segments[0].startswith("MSH") else []
        get = lambda n: msh[n] if len(msh) > n else ""
        self.acks += 1
        now = datetime.datetime.now().astimezone().strftime("%Y%m%d%H%M%S%z")
        lines = [
            f.join(["MSH", "".join(seps[1:]), get(5), get(6), get(3), get(4), now, "",
                    seps[1].join(["ACK", "P03", "ACK"]), "ACK%d" % self.acks, get(11) or "P", "2.5.1"]),
            f.join(["MSA", code, control_id, escape(reason, seps)]),
        ]
        if code != "AA":
            lines.append(f.join(["ERR", "", location, error_code, "E", "", "", "", escape(reason, seps)]))
        return "\r".join(lines) + "\r"


async def serve_connection(peer, reader, writer):
    buf = b""
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            buf += chunk
            while True:
                start = buf.find(START)
                if start < 0:
                    buf = b""
                    break
                end = buf.find(END, start)
                if end < 0:
                    buf = buf[start:]
                    if len(buf) > MAX_FRAME:
                        raise ConnectionError("frame over %d bytes" % MAX_FRAME)
                    break
                frame, buf = buf[start + 1:end], buf[end + 2:]
                try:
                    text = frame.decode("utf-8")
                except UnicodeDecodeError:
                    # MSH-18 says UNICODE UTF-8 or nothing (ASCII): other bytes are refused.
                    text = "\ufffd"
                reply = peer.handle(text)
                writer.write(START + reply.encode("utf-8") + END)
                await writer.drain()
    except (ConnectionError, OSError) as e:
        print("connection closed: %s" % e, file=sys.stderr, flush=True)
    finally:
        writer.close()


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--log", required=True)
    ap.add_argument("--refuse-code", action="append", default=[])
    args = ap.parse_args()
    refuse = {}
    for item in args.refuse_code:
        code, _, reason = item.partition("=")
        refuse[code] = reason
    peer = Peer(args.log, refuse)
    # Dedupe survives a restart: the control ids accepted before are read back from the log.
    try:
        with open(args.log, encoding="utf-8") as log:
            for line in log:
                entry = json.loads(line)
                if entry["ack"] == "AA" and not entry["duplicate"]:
                    peer.accepted[entry["control_id"]] = hashlib.sha256(
                        entry["message"].encode("utf-8")).hexdigest()
    except FileNotFoundError:
        pass
    server = await asyncio.start_server(lambda r, w: serve_connection(peer, r, w),
                                        "127.0.0.1", args.port, reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    print("ready %d" % port, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
