"""Text for terminals and logs."""


def printable(s: object) -> str:
    """`s` with every character str.isprintable() refuses (C0 and C1 controls, DEL, line and
    paragraph separators, format characters such as bidi overrides, lone surrogates of
    undecodable file names) written as repr() writes it (\\x1b, \\n, \\u202e, \\udcff); other
    text, normal unicode included, unchanged. A file name can then neither repaint a terminal
    nor fail the print. Backslashes are kept as they are (names are shown, not parsed)."""
    text = str(s)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)
