"""A tiny pure-Python rasteriser for the timeline primitives (``plot.build``) and a PNG writer
(RFC 2083: signature, IHDR, one zlib IDAT of filter-0 scanlines, IEND; 8-bit RGB). Text uses a 5x7
bitmap font (upper case; lower case is drawn as upper case), scaled by the text size."""
from __future__ import annotations

import struct
import zlib

# 5 columns per glyph, bit 0 = top row (the classic 5x7 LCD font)
_FONT = {
    " ": (0, 0, 0, 0, 0), "0": (0x3E, 0x51, 0x49, 0x45, 0x3E), "1": (0x00, 0x42, 0x7F, 0x40, 0x00),
    "2": (0x42, 0x61, 0x51, 0x49, 0x46), "3": (0x21, 0x41, 0x45, 0x4B, 0x31), "4": (0x18, 0x14, 0x12, 0x7F, 0x10),
    "5": (0x27, 0x45, 0x45, 0x45, 0x39), "6": (0x3C, 0x4A, 0x49, 0x49, 0x30), "7": (0x01, 0x71, 0x09, 0x05, 0x03),
    "8": (0x36, 0x49, 0x49, 0x49, 0x36), "9": (0x06, 0x49, 0x49, 0x29, 0x1E), "A": (0x7E, 0x11, 0x11, 0x11, 0x7E),
    "B": (0x7F, 0x49, 0x49, 0x49, 0x36), "C": (0x3E, 0x41, 0x41, 0x41, 0x22), "D": (0x7F, 0x41, 0x41, 0x22, 0x1C),
    "E": (0x7F, 0x49, 0x49, 0x49, 0x41), "F": (0x7F, 0x09, 0x09, 0x09, 0x01), "G": (0x3E, 0x41, 0x49, 0x49, 0x7A),
    "H": (0x7F, 0x08, 0x08, 0x08, 0x7F), "I": (0x00, 0x41, 0x7F, 0x41, 0x00), "J": (0x20, 0x40, 0x41, 0x3F, 0x01),
    "K": (0x7F, 0x08, 0x14, 0x22, 0x41), "L": (0x7F, 0x40, 0x40, 0x40, 0x40), "M": (0x7F, 0x02, 0x0C, 0x02, 0x7F),
    "N": (0x7F, 0x04, 0x08, 0x10, 0x7F), "O": (0x3E, 0x41, 0x41, 0x41, 0x3E), "P": (0x7F, 0x09, 0x09, 0x09, 0x06),
    "Q": (0x3E, 0x41, 0x51, 0x21, 0x5E), "R": (0x7F, 0x09, 0x19, 0x29, 0x46), "S": (0x46, 0x49, 0x49, 0x49, 0x31),
    "T": (0x01, 0x01, 0x7F, 0x01, 0x01), "U": (0x3F, 0x40, 0x40, 0x40, 0x3F), "V": (0x1F, 0x20, 0x40, 0x20, 0x1F),
    "W": (0x3F, 0x40, 0x38, 0x40, 0x3F), "X": (0x63, 0x14, 0x08, 0x14, 0x63), "Y": (0x07, 0x08, 0x70, 0x08, 0x07),
    "Z": (0x61, 0x51, 0x49, 0x45, 0x43), ".": (0x00, 0x60, 0x60, 0x00, 0x00), ":": (0x00, 0x36, 0x36, 0x00, 0x00),
    "-": (0x08, 0x08, 0x08, 0x08, 0x08), "_": (0x40, 0x40, 0x40, 0x40, 0x40), "/": (0x20, 0x10, 0x08, 0x04, 0x02),
    "(": (0x00, 0x1C, 0x22, 0x41, 0x00), ")": (0x00, 0x41, 0x22, 0x1C, 0x00), "%": (0x23, 0x13, 0x08, 0x64, 0x62),
    "=": (0x14, 0x14, 0x14, 0x14, 0x14), "+": (0x08, 0x08, 0x3E, 0x08, 0x08), ",": (0x00, 0x50, 0x30, 0x00, 0x00),
    ";": (0x00, 0x56, 0x36, 0x00, 0x00), "<": (0x08, 0x14, 0x22, 0x41, 0x00), ">": (0x00, 0x41, 0x22, 0x14, 0x08),
    "[": (0x00, 0x7F, 0x41, 0x41, 0x00), "]": (0x00, 0x41, 0x41, 0x7F, 0x00), "#": (0x14, 0x7F, 0x14, 0x7F, 0x14),
    "?": (0x02, 0x01, 0x51, 0x09, 0x06), "!": (0x00, 0x00, 0x5F, 0x00, 0x00), "'": (0x00, 0x05, 0x03, 0x00, 0x00),
}


def _rgb(color: str) -> tuple[int, int, int]:
    c = color.lstrip("#")
    return int(c[0:2], 16), int(c[2:4], 16), int(c[4:6], 16)


class Canvas:
    def __init__(self, w: int, h: int):
        self.w, self.h = w, h
        self.px = bytearray(b"\xff" * (w * h * 3))

    def set(self, x: int, y: int, rgb, alpha: float = 1.0) -> None:
        if 0 <= x < self.w and 0 <= y < self.h:
            i = (y * self.w + x) * 3
            if alpha >= 1.0:
                self.px[i:i + 3] = bytes(rgb)
            else:
                for k in range(3):
                    self.px[i + k] = int(self.px[i + k] * (1 - alpha) + rgb[k] * alpha)

    def rect(self, x, y, w, h, rgb, alpha=1.0) -> None:
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(self.w, int(x + w + 0.5)), min(self.h, int(y + h + 0.5))
        if alpha >= 1.0:
            row = bytes(rgb) * max(0, x1 - x0)
            for yy in range(y0, y1):
                i = (yy * self.w + x0) * 3
                self.px[i:i + len(row)] = row
            return
        for yy in range(y0, y1):
            for xx in range(x0, x1):
                self.set(xx, yy, rgb, alpha)

    def line(self, x1, y1, x2, y2, rgb, width=1, dashed=False) -> None:
        """Bresenham (integer steps), thickened by a square pen; dashes 5 on / 4 off."""
        x1, y1, x2, y2 = int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))
        dx, dy = abs(x2 - x1), -abs(y2 - y1)
        sx, sy = (1 if x1 < x2 else -1), (1 if y1 < y2 else -1)
        err, n, half = dx + dy, 0, max(0, int(width) // 2)
        for _ in range(dx - dy + 1):
            if not dashed or n % 9 < 5:
                for ox in range(-half, int(width) - half):
                    for oy in range(-half, int(width) - half):
                        self.set(x1 + ox, y1 + oy, rgb)
            n += 1
            if x1 == x2 and y1 == y2:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x1 += sx
            if e2 <= dx:
                err += dx
                y1 += sy

    def dot(self, cx, cy, r, rgb) -> None:
        ri = int(r + 0.5)
        for oy in range(-ri, ri + 1):
            for ox in range(-ri, ri + 1):
                if ox * ox + oy * oy <= r * r + 0.5:
                    self.set(int(cx) + ox, int(cy) + oy, rgb)

    def text(self, x, y, s: str, rgb, size: int, anchor: str) -> None:
        scale = 2 if size >= 15 else 1
        adv = 6 * scale
        width = adv * len(s)
        x0 = int(x - (width / 2 if anchor == "middle" else width if anchor == "end" else 0))
        top = int(y) - 7 * scale
        for k, ch in enumerate(s.upper()):
            cols = _FONT.get(ch, _FONT["?"])
            for cx, bits in enumerate(cols):
                for cy in range(7):
                    if bits >> cy & 1:
                        self.rect(x0 + k * adv + cx * scale, top + cy * scale, scale, scale, rgb)

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.px[y * self.w * 3:(y + 1) * self.w * 3]) for y in range(self.h))

        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", self.w, self.h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def render(width: int, height: int, prims: list[tuple]) -> bytes:
    cv = Canvas(int(width), int(height))
    for p in prims:
        kind = p[0]
        if kind == "line":
            cv.line(p[1], p[2], p[3], p[4], _rgb(p[5]), p[6], p[7])
        elif kind == "poly":
            rgb = _rgb(p[2])
            for (xa, ya), (xb, yb) in zip(p[1], p[1][1:]):
                cv.line(xa, ya, xb, yb, rgb, p[3])
        elif kind == "dot":
            cv.dot(p[1], p[2], p[3], _rgb(p[4]))
        elif kind == "cross":
            _, x, y, r, color = p
            cv.line(x - r, y - r, x + r, y + r, _rgb(color), 2)
            cv.line(x - r, y + r, x + r, y - r, _rgb(color), 2)
        elif kind == "rect":
            cv.rect(p[1], p[2], p[3], p[4], _rgb(p[5]), p[6])
        elif kind == "text":
            cv.text(p[1], p[2], str(p[3]), _rgb(p[4]), p[5], p[6])
    return cv.png()
