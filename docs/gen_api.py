#!/usr/bin/env python3
"""Writes docs/api.md from the comments and declarations in include/kiln/."""
import os, re, sys


def blocks(text):
    """Yield (comment, declaration) pairs: a declaration with the comment
    directly above it, or a lone comment that introduces a section."""
    lines = text.splitlines()
    i, comment = 0, []
    while i < len(lines):
        line = lines[i].rstrip()
        s = line.strip()
        if s.startswith("/*"):
            comment = [line]
            while "*/" not in lines[i]:
                i += 1
                comment.append(lines[i].rstrip())
            i += 1
            continue
        if (s.startswith("#") and not s.startswith("#define KILN_")) or re.match(r"#define KILN_\w+_H$", s) or s in ("", "{", "}") or s.startswith("extern \"C\""):
            if s == "" and comment:
                yield ("\n".join(comment), None)
                comment = []
            i += 1
            continue
        decl = [line]
        depth = line.count("{") - line.count("}")
        while (depth > 0 or not (decl[-1].rstrip().endswith(";") or decl[-1].rstrip().endswith("}") or s.startswith("#define"))) and i + 1 < len(lines):
            i += 1
            decl.append(lines[i].rstrip())
            depth += lines[i].count("{") - lines[i].count("}")
            if s.startswith("#define"):
                break
        yield ("\n".join(comment), "\n".join(decl))
        comment = []
        i += 1

def clean(comment):
    c = re.sub(r"^\s*/\*+ ?|\s*\*+/\s*$", "", comment, flags=re.M)
    c = re.sub(r"^\s*\* ?", "", c, flags=re.M)
    return c.strip()

def main():
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
    out = ["# Kiln API reference", "",
           "Every public declaration, by header, with the comment that documents it. Errors are",
           "`kiln_err` codes (`error.h`); `kiln_strerror(code)` names them. Generated from",
           "`include/kiln/` by `docs/gen_api.py`: edit the headers, then run it (CI checks it is current).", ""]
    # The public API is what kiln.h includes, in its order.
    umbrella = open(os.path.join(root, "include", "kiln", "kiln.h")).read()
    headers = ["kiln.h"] + re.findall(r'#include "kiln/(\w+\.h)"', umbrella)
    for h in headers:
        path = os.path.join(root, "include", "kiln", h)
        if not os.path.exists(path):
            continue
        out += ["## `kiln/%s`" % h, ""]
        for comment, decl in blocks(open(path).read()):
            c = clean(comment) if comment else ""
            if decl is None:
                if c and not c.startswith("Kiln") or h == "kiln.h":
                    out += [c, ""]
                continue
            out += ["```c", decl, "```"]
            if c:
                out += [c, ""]
            else:
                out += [""]
    text = "\n".join(out).rstrip() + "\n"
    target = os.path.join(root, "docs", "api.md")
    if len(sys.argv) > 1 and sys.argv[1] == "--check":
        if not os.path.exists(target) or open(target).read() != text:
            print("docs/api.md is out of date: run docs/gen_api.py", file=sys.stderr)
            sys.exit(1)
        return
    open(target, "w").write(text)

main()
