#!/usr/bin/python3
"""Generates core/text/unicode_tables.c: the Unicode and character-set data of
dfx's CLIP tokenizer (core/text), asked of the very Python modules whose
behaviour the tokenizer reproduces, so that the C code classifies every code
point exactly as they do:

  * the `regex` module (2022.10.31, Debian's python3-regex, Unicode 15.0), as
    transformers' CLIPTokenizer compiles its pre-tokenizer pattern (with
    regex.IGNORECASE) and its whitespace_clean's \\s;
  * CPython 3.11's unicodedata / str methods (Unicode 14.0): str.lower() (with
    its Final_Sigma rule), str.isspace() (str.strip/split), the `re` module's
    \\w, \\s and \\d (ftfy's regular expressions), unicodedata.category (BERT's
    BasicTokenizer), NFC and NFKC (unicodedata.normalize);
  * the standard codecs and html.entities, for ftfy 6.1.1's tables (its
    encodings, sloppy codecs, HTML entities and character-width map);
  * ftfy 6.1.1's character classes (ftfy/badness.py MOJIBAKE_CATEGORIES and
    BADNESS_RE, ftfy/chardata.py UTF8_CLUES, LIGATURES), transcribed below as
    data and evaluated with `re` exactly as ftfy builds its expressions.

Run it with Debian bookworm's python3 (3.11.2) and python3-regex:
    /usr/bin/python3 tools/gen_unicode_tables.py > core/text/unicode_tables.c
The output is deterministic; the script refuses other module versions unless
--any-version is given (the tables would then describe another Unicode).
"""
import codecs
import html
import html.entities
import re
import sys
import unicodedata

import regex

MAX_CP = 0x110000
ANY_VERSION = "--any-version" in sys.argv[1:]


def check_versions():
    want = {"regex": ("2.5.123", regex.__version__),  # the 2022.10.31 release
            "unicodedata": ("14.0.0", unicodedata.unidata_version),
            "python": ("3.11", "%d.%d" % sys.version_info[:2])}
    bad = [f"{k} {have} (want {w})" for k, (w, have) in want.items() if w != have]
    if bad and not ANY_VERSION:
        sys.exit("gen_unicode_tables.py: " + ", ".join(bad) + "; run Debian bookworm's /usr/bin/python3 "
                 "with python3-regex, or pass --any-version")


# ----------------------------------------------------------------------------
# helpers

def ranges_of(pred, limit=MAX_CP):
    out, start = [], None
    for cp in range(limit):
        if pred(cp):
            if start is None:
                start = cp
        elif start is not None:
            out.append((start, cp - 1))
            start = None
    if start is not None:
        out.append((start, limit - 1))
    return out


ALL_CODE_POINTS = "".join(map(chr, range(MAX_CP)))


def members(pattern):
    """The code points a compiled one-character pattern (re or regex) matches."""
    return {m.start() for m in pattern.finditer(ALL_CODE_POINTS)}


def ranges_of_set(cps):
    out = []
    for cp in sorted(cps):
        if out and out[-1][1] == cp - 1:
            out[-1][1] = cp
        else:
            out.append([cp, cp])
    return [tuple(r) for r in out]


def c_string(s):
    """A C string literal holding s as UTF-8."""
    out = []
    for b in s.encode("utf-8"):
        if 0x20 <= b < 0x7F and b not in (0x22, 0x5C, 0x3F):
            out.append(chr(b))
        else:
            out.append("\\%03o" % b)
    return '"' + "".join(out) + '"'


OUT = []


def emit(line=""):
    OUT.append(line)


def emit_items(items, per_line):
    for i in range(0, len(items), per_line):
        emit("    " + " ".join(items[i:i + per_line]))


def emit_uset(name, rngs, why):
    emit(f"/* {why} */")
    static = name.replace("dfx__", "") + "_r"
    emit(f"static const dfx__urange {static}[] = {{")
    emit_items([f"{{0x{a:X}, 0x{b:X}}}," for a, b in rngs], 6)
    emit("};")
    emit(f"const dfx__uset {name} = {{{static}, {len(rngs)}}};")
    emit()


# ----------------------------------------------------------------------------
# transformers' CLIPTokenizer: the pre-tokenizer pattern's classes, asked of
# `regex` with the flag CLIPTokenizer compiles them with.

def gen_regex_classes():
    ic = regex.IGNORECASE
    letter = regex.compile(r"[\p{L}]", ic)
    number = regex.compile(r"[\p{N}]", ic)
    other = regex.compile(r"[^\s\p{L}\p{N}]", ic)
    space = regex.compile(r"\s")
    tabs = {"letter": members(letter), "number": members(number), "other": members(other),
            "space": members(space)}
    for cp in (0x41, 0x3A3, 0x345, 0x1E030, 0x10FFFF, 0x20, 0x3000, 0x31, 0x2C):   # spot checks
        c = chr(cp)
        assert (cp in tabs["letter"]) == bool(letter.fullmatch(c)) and (cp in tabs["other"]) == bool(other.fullmatch(c))
    emit_uset("dfx__clip_letter", ranges_of_set(tabs["letter"]),
              "CLIPTokenizer.pat's [\\p{L}] under regex.IGNORECASE")
    emit_uset("dfx__clip_number", ranges_of_set(tabs["number"]),
              "CLIPTokenizer.pat's [\\p{N}] under regex.IGNORECASE")
    emit_uset("dfx__clip_other", ranges_of_set(tabs["other"]),
              "CLIPTokenizer.pat's [^\\s\\p{L}\\p{N}] under regex.IGNORECASE")
    emit_uset("dfx__regex_space", ranges_of_set(tabs["space"]),
              "the regex module's \\s (transformers' whitespace_clean)")

    # Case-insensitive matching of the pattern's literal letters ('s, 't,
    # <|startoftext|>...): the code points other than the ASCII letter itself
    # and its capital that regex.IGNORECASE lets match it.
    any_letter = regex.compile(r"[a-z]", ic)
    extra = []
    for cp in sorted(members(any_letter)):
        c = chr(cp)
        if cp >= 0x80:
            hits = [x for x in "abcdefghijklmnopqrstuvwxyz" if regex.fullmatch(x, c, ic)]
            assert len(hits) == 1, hex(cp)
            extra.append((cp, hits[0]))
    # regex.IGNORECASE without FULLCASE folds one code point at a time
    assert regex.fullmatch("ss", "\u00df", ic) is None
    emit("/* Non-ASCII code points that CLIPTokenizer.pat's literal letters match")
    emit(" * under regex.IGNORECASE (simple case folding), with the letter. */")
    emit("const dfx__ufold dfx__clip_fold[] = {")
    emit_items([f"{{0x{cp:X}, '{x}'}}," for cp, x in extra], 6)
    emit("};")
    emit(f"const size_t dfx__clip_fold_count = {len(extra)};")
    emit()


# ----------------------------------------------------------------------------
# CPython 3.11 str and re behaviour

def gen_python_classes():
    emit_uset("dfx__py_space", ranges_of(lambda cp: chr(cp).isspace()),
              "str.isspace(): what str.strip() and str.split() remove")
    assert members(re.compile(r"\s")) == {cp for cp in range(MAX_CP) if chr(cp).isspace()}
    emit_uset("dfx__py_word", ranges_of_set(members(re.compile(r"\w"))),
              "the re module's \\w on str (ftfy's BADNESS_RE)")
    emit_uset("dfx__py_digit", ranges_of_set(members(re.compile(r"\d"))),
              "the re module's \\d on str (ftfy's ANSI_RE)")
    emit_uset("dfx__py_control", ranges_of(lambda cp: unicodedata.category(chr(cp))[0] == "C"),
              "unicodedata.category() C* (Cc, Cf, Cs, Co, Cn): BasicTokenizer's _is_control")
    emit_uset("dfx__py_zs", ranges_of(lambda cp: unicodedata.category(chr(cp)) == "Zs"),
              "unicodedata.category() Zs: BasicTokenizer's _is_whitespace")


def gen_lower():
    single, multi = [], []
    for cp in range(MAX_CP):
        low = chr(cp).lower()
        if low == chr(cp):
            continue
        if len(low) == 1:
            single.append((cp, ord(low)))
        else:
            multi.append((cp, low))
    # The only full (multi-code-point) lowercase mapping in Unicode 14.0; the
    # C code spells it out.
    assert multi == [(0x130, "i\u0307")], multi
    emit("/* str.lower(): the one-to-one mappings (U+0130 and U+03A3's final form")
    emit(" * are handled in code). */")
    emit("const dfx__umap dfx__lower_map[] = {")
    emit_items([f"{{0x{a:X}, 0x{b:X}}}," for a, b in single], 6)
    emit("};")
    emit(f"const size_t dfx__lower_map_count = {len(single)};")
    emit()

    # str.lower() turns U+03A3 into final sigma (U+03C2) when it follows a
    # cased letter and precedes none, skipping case-ignorable code points
    # (CPython's handle_capital_sigma). Python exposes neither property, so
    # ask lower() itself: "A" + c + SIGMA ends in final sigma iff c is
    # case-ignorable or cased; c + SIGMA does iff c is cased and not
    # case-ignorable (an ignorable one is skipped, reaching the start).
    sigma, final = "\u03a3", "\u03c2"
    ignorable, cased = set(), set()
    for cp in range(MAX_CP):
        c = chr(cp)
        p1 = ("A" + c + sigma).lower()[-1] == final
        p2 = (c + sigma).lower()[-1] == final
        assert p1 or not p2
        if p1 and not p2:
            ignorable.add(cp)
        elif p2:
            cased.add(cp)
    emit_uset("dfx__case_ignorable", ranges_of_set(ignorable),
              "Case_Ignorable as str.lower()'s final-sigma rule sees it")
    emit_uset("dfx__cased", ranges_of_set(cased),
              "Cased (and not Case_Ignorable) as str.lower()'s final-sigma rule sees it")


# ----------------------------------------------------------------------------
# NFC (unicodedata.normalize): canonical combining classes, full canonical
# decompositions and the primary composites.

SBASE, LBASE, VBASE, TBASE = 0xAC00, 0x1100, 0x1161, 0x11A7
LCOUNT, VCOUNT, TCOUNT = 19, 21, 28
SCOUNT = LCOUNT * VCOUNT * TCOUNT


def canon_decomp(cp):
    d = unicodedata.decomposition(chr(cp))
    if not d or d.startswith("<"):
        return None
    return [int(x, 16) for x in d.split()]


def full_decomp(cp):
    d = canon_decomp(cp)
    if d is None:
        return [cp]
    out = []
    for x in d:
        out.extend(full_decomp(x))
    return out


def nfc_model(s, ccc, decomp, comp):
    """The algorithm core/text/unicode.c implements, to check the tables."""
    cps = []
    for ch in s:
        cp = ord(ch)
        if SBASE <= cp < SBASE + SCOUNT:
            i = cp - SBASE
            cps += [LBASE + i // (VCOUNT * TCOUNT), VBASE + (i % (VCOUNT * TCOUNT)) // TCOUNT]
            if i % TCOUNT:
                cps.append(TBASE + i % TCOUNT)
        else:
            cps += decomp.get(cp, [cp])
    i = 0
    while i < len(cps):  # canonical ordering: stable sort of each run of non-starters
        if ccc.get(cps[i], 0) == 0:
            i += 1
            continue
        j = i
        while j < len(cps) and ccc.get(cps[j], 0):
            j += 1
        cps[i:j] = sorted(cps[i:j], key=lambda c: ccc[c])
        i = j
    out = []
    starter = None
    last_ccc = 0
    for cp in cps:
        c = ccc.get(cp, 0)
        if starter is not None and (last_ccc < c or (last_ccc == 0 and len(out) - 1 == starter)):
            s0 = out[starter]
            if LBASE <= s0 < LBASE + LCOUNT and VBASE <= cp < VBASE + VCOUNT and len(out) - 1 == starter:
                out[starter] = SBASE + ((s0 - LBASE) * VCOUNT + (cp - VBASE)) * TCOUNT
                continue
            if (SBASE <= s0 < SBASE + SCOUNT and (s0 - SBASE) % TCOUNT == 0 and TBASE < cp < TBASE + TCOUNT
                    and len(out) - 1 == starter):
                out[starter] = s0 + (cp - TBASE)
                continue
            if (s0, cp) in comp:
                out[starter] = comp[(s0, cp)]
                continue
        if c == 0:
            starter = len(out)
        last_ccc = c
        out.append(cp)
    return "".join(map(chr, out))


def gen_nfc():
    ccc = {cp: unicodedata.combining(chr(cp)) for cp in range(MAX_CP) if unicodedata.combining(chr(cp))}
    decomp = {}
    comp = {}
    for cp in range(MAX_CP):
        d = canon_decomp(cp)
        if d is None:
            continue
        decomp[cp] = full_decomp(cp)
        # a primary composite: a two-code-point canonical decomposition that
        # NFC puts back together (composition exclusions, singletons and
        # non-starter decompositions do not survive NFC)
        if len(d) == 2 and unicodedata.normalize("NFC", chr(cp)) == chr(cp):
            comp[(d[0], d[1])] = cp
    # self-check of the tables and the algorithm against unicodedata
    import random
    rnd = random.Random(1)
    marks = sorted(ccc)
    starters = sorted({d[0] for d in comp})
    for cp in range(MAX_CP):
        if 0xD800 <= cp < 0xE000:
            continue
        s = chr(cp)
        assert nfc_model(s, ccc, decomp, comp) == unicodedata.normalize("NFC", s), hex(cp)
    pool = [chr(c) for c in marks[:400] + starters + list(comp.values())[:600] + [0x1100, 0x1161, 0x11A8, 0xAC00]]
    for _ in range(20000):
        s = "".join(rnd.choice(pool) for _ in range(rnd.randint(1, 6)))
        assert nfc_model(s, ccc, decomp, comp) == unicodedata.normalize("NFC", s), s.encode("unicode-escape")

    emit("/* unicodedata.combining(): the non-zero canonical combining classes. */")
    emit("const dfx__umap dfx__ccc_map[] = {")
    emit_items([f"{{0x{a:X}, {b}}}," for a, b in sorted(ccc.items())], 6)
    emit("};")
    emit(f"const size_t dfx__ccc_map_count = {len(ccc)};")
    emit()
    pool, rows = [], []
    for cp in sorted(decomp):
        rows.append(f"{{0x{cp:X}, {len(pool)}, {len(decomp[cp])}}},")
        pool.extend(decomp[cp])
    emit("/* Full canonical decompositions (Hangul syllables are algorithmic). */")
    emit("const uint32_t dfx__decomp_pool[] = {")
    emit_items([f"0x{x:X}," for x in pool], 8)
    emit("};")
    emit("const dfx__udecomp dfx__decomp_map[] = {")
    emit_items(rows, 4)
    emit("};")
    emit(f"const size_t dfx__decomp_map_count = {len(decomp)};")
    emit()
    emit("/* Primary composites: (first, second) -> composite, sorted by the pair. */")
    emit("const dfx__ucomp dfx__comp_map[] = {")
    emit_items([f"{{0x{a:X}, 0x{b:X}, 0x{c:X}}}," for (a, b), c in sorted(comp.items())], 4)
    emit("};")
    emit(f"const size_t dfx__comp_map_count = {len(comp)};")
    emit()


# ----------------------------------------------------------------------------
# ftfy 6.1.1 data

# ftfy/chardata.py CHARMAP_ENCODINGS, in the order fix_encoding tries them
CHARMAP_ENCODINGS = ["latin-1", "sloppy-windows-1252", "sloppy-windows-1251", "sloppy-windows-1250",
                     "sloppy-windows-1253", "sloppy-windows-1254", "iso-8859-2", "macroman", "cp437"]


def charmap_decoding_table(encoding):
    """The 256 code points the bytes decode to (ftfy's sloppy codecs: the
    standard codec's table, its holes filled with the Latin-1 code point, and
    byte 0x1A standing for U+FFFD; see ftfy/bad_codecs/sloppy.py)."""
    allb = bytes(range(256))
    if encoding.startswith("sloppy-"):
        chars = list(allb.decode("latin-1"))
        for i, ch in enumerate(allb.decode(encoding[len("sloppy-"):], errors="replace")):
            if ch != "\ufffd":
                chars[i] = ch
        chars[0x1A] = "\ufffd"
    else:
        chars = list(allb.decode(encoding))
    return [ord(c) for c in chars]


def gen_charmaps():
    emit("/* ftfy's single-byte encodings (chardata.CHARMAP_ENCODINGS, in order):")
    emit(" * what bytes 0x80-0xFF decode to, then byte 0x1A. Bytes 0x00-0x7F other")
    emit(" * than 0x1A decode to themselves in all of them. */")
    emit("const char *const dfx__charmap_names[DFX__CHARMAP_COUNT] = {")
    emit_items([f'"{e}",' for e in CHARMAP_ENCODINGS], 5)
    emit("};")
    emit("const uint16_t dfx__charmap[DFX__CHARMAP_COUNT][129] = {")
    for enc in CHARMAP_ENCODINGS:
        t = charmap_decoding_table(enc)
        for b in range(0x80):
            assert t[b] == b or b == 0x1A, (enc, b)
        high = t[0x80:]
        assert len(set(high + [t[0x1A]])) == 129, enc   # encoding is the inverse map
        assert all(c >= 0x80 for c in high) and max(high) < 0x10000
        emit(f"    {{ /* {enc} */")
        emit_items([f"0x{c:04X}," for c in high + [t[0x1A]]], 10)
        emit("    },")
    emit("};")
    emit()


def gen_html():
    # ftfy/chardata.py _build_html_entities: the html5 names that end in ';',
    # plus the upper-cased form of each all-lowercase name when the upper-cased
    # form is not itself an entity html.unescape knows
    ents = {}
    for name, char in html.entities.html5.items():
        if name.endswith(";"):
            ents["&" + name] = char
            if name == name.lower():
                upper = "&" + name.upper()
                if html.unescape(upper) == upper:
                    ents[upper] = char.upper()
    names = sorted(ents, key=lambda k: k[1:-1].encode("ascii"))   # strcmp order of the bare names
    assert all(re.fullmatch(r"&[0-9A-Za-z]+;", n) for n in names)
    emit("/* ftfy's HTML_ENTITIES, the names without '&' and ';', sorted (strcmp). */")
    emit("const dfx__entity dfx__html_entities[] = {")
    emit_items([f'{{"{n[1:-1]}", {c_string(ents[n])}}},' for n in names], 3)
    emit("};")
    emit(f"const size_t dfx__html_entity_count = {len(names)};")
    emit()
    inv = html._invalid_charrefs
    emit("/* html.unescape's _invalid_charrefs: numeric references it replaces. */")
    emit("const dfx__umap dfx__html_invalid_charrefs[] = {")
    emit_items([f"{{0x{k:X}, 0x{ord(v):X}}}," for k, v in sorted(inv.items())], 6)
    emit("};")
    emit(f"const size_t dfx__html_invalid_charref_count = {len(inv)};")
    emit_uset("dfx__html_invalid_codepoints", ranges_of_set(html._invalid_codepoints),
              "html.unescape's _invalid_codepoints: numeric references it drops")


# ftfy/chardata.py LIGATURES (fix_latin_ligatures)
LIGATURES = {
    "Ĳ": "IJ", "ĳ": "ij", "ŉ": "ʼn", "Ǳ": "DZ", "ǲ": "Dz", "ǳ": "dz", "Ǆ": "DŽ", "ǅ": "Dž", "ǆ": "dž",
    "Ǉ": "LJ", "ǈ": "Lj", "ǉ": "lj", "Ǌ": "NJ", "ǋ": "Nj", "ǌ": "nj",
    "ﬀ": "ff", "ﬁ": "fi", "ﬂ": "fl", "ﬃ": "ffi", "ﬄ": "ffl", "ﬅ": "ſt", "ﬆ": "st",
}


def gen_translations():
    # ftfy/chardata.py _build_width_map (fix_character_width)
    width = {0x3000: " "}
    for cp in range(0xFF01, 0xFFF0):
        alt = unicodedata.normalize("NFKC", chr(cp))
        if alt != chr(cp):
            width[cp] = alt
    emit("/* ftfy's fix_character_width map (chardata.WIDTH_MAP). */")
    emit("const dfx__utrans dfx__width_map[] = {")
    emit_items([f"{{0x{cp:X}, {c_string(s)}}}," for cp, s in sorted(width.items())], 4)
    emit("};")
    emit(f"const size_t dfx__width_map_count = {len(width)};")
    emit()
    emit("/* ftfy's fix_latin_ligatures map (chardata.LIGATURES). */")
    emit("const dfx__utrans dfx__ligature_map[] = {")
    emit_items([f"{{0x{ord(k):X}, {c_string(v)}}}," for k, v in sorted(LIGATURES.items())], 4)
    emit("};")
    emit(f"const size_t dfx__ligature_map_count = {len(LIGATURES)};")
    emit()


# ftfy/badness.py MOJIBAKE_CATEGORIES
MOJIBAKE_CATEGORIES = {
    "common": ("\N{NO-BREAK SPACE}\N{SOFT HYPHEN}\N{MIDDLE DOT}\N{ACUTE ACCENT}\N{EN DASH}\N{EM DASH}"
               "\N{HORIZONTAL BAR}\N{HORIZONTAL ELLIPSIS}\N{RIGHT SINGLE QUOTATION MARK}"),
    "c1": "\x80-\x9f",
    "bad": ("\N{BROKEN BAR}\N{CURRENCY SIGN}\N{DIAERESIS}\N{NOT SIGN}\N{MACRON}\N{PILCROW SIGN}"
            "\N{SECTION SIGN}\N{CEDILLA}\N{LATIN SMALL LETTER F WITH HOOK}"
            "\N{MODIFIER LETTER CIRCUMFLEX ACCENT}\N{CARON}\N{BREVE}\N{OGONEK}\N{SMALL TILDE}\N{DAGGER}"
            "\N{DOUBLE DAGGER}\N{PER MILLE SIGN}\N{REVERSED NOT SIGN}\N{LOZENGE}\ufffd"
            "\N{FEMININE ORDINAL INDICATOR}\N{MASCULINE ORDINAL INDICATOR}"),
    "currency": "\N{CENT SIGN}\N{POUND SIGN}\N{YEN SIGN}\N{PESETA SIGN}\N{EURO SIGN}",
    "start_punctuation": (
        "\N{INVERTED EXCLAMATION MARK}\N{LEFT-POINTING DOUBLE ANGLE QUOTATION MARK}"
        "\N{INVERTED QUESTION MARK}\N{COPYRIGHT SIGN}\N{GREEK TONOS}\N{GREEK DIALYTIKA TONOS}"
        "\N{LEFT SINGLE QUOTATION MARK}\N{SINGLE LOW-9 QUOTATION MARK}\N{LEFT DOUBLE QUOTATION MARK}"
        "\N{DOUBLE LOW-9 QUOTATION MARK}\N{BULLET}\N{SINGLE LEFT-POINTING ANGLE QUOTATION MARK}\uf8ff"),
    "end_punctuation": (
        "\N{REGISTERED SIGN}\N{RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK}\N{DOUBLE ACUTE ACCENT}"
        "\N{RIGHT DOUBLE QUOTATION MARK}\N{SINGLE RIGHT-POINTING ANGLE QUOTATION MARK}\N{TRADE MARK SIGN}"),
    "numeric": (
        "\N{SUPERSCRIPT TWO}\N{SUPERSCRIPT THREE}\N{SUPERSCRIPT ONE}\N{PLUS-MINUS SIGN}"
        "\N{VULGAR FRACTION ONE QUARTER}\N{VULGAR FRACTION ONE HALF}\N{VULGAR FRACTION THREE QUARTERS}"
        "\N{MULTIPLICATION SIGN}\N{MICRO SIGN}\N{DIVISION SIGN}\N{FRACTION SLASH}\N{PARTIAL DIFFERENTIAL}"
        "\N{INCREMENT}\N{N-ARY PRODUCT}\N{N-ARY SUMMATION}\N{SQUARE ROOT}\N{INFINITY}\N{INTERSECTION}"
        "\N{INTEGRAL}\N{ALMOST EQUAL TO}\N{NOT EQUAL TO}\N{IDENTICAL TO}\N{LESS-THAN OR EQUAL TO}"
        "\N{GREATER-THAN OR EQUAL TO}\N{NUMERO SIGN}"),
    "kaomoji": "Ò-ÖÙ-Üò-öø-ü\N{LATIN CAPITAL LETTER O WITH DOUBLE ACUTE}\N{DEGREE SIGN}",
    "upper_accented": (
        "\xc0-\xd1\N{LATIN CAPITAL LETTER O WITH STROKE}\N{LATIN CAPITAL LETTER U WITH DIAERESIS}"
        "\N{LATIN CAPITAL LETTER Y WITH ACUTE}\N{LATIN CAPITAL LETTER A WITH BREVE}"
        "\N{LATIN CAPITAL LETTER A WITH OGONEK}\N{LATIN CAPITAL LETTER C WITH ACUTE}"
        "\N{LATIN CAPITAL LETTER C WITH CARON}\N{LATIN CAPITAL LETTER D WITH CARON}"
        "\N{LATIN CAPITAL LETTER D WITH STROKE}\N{LATIN CAPITAL LETTER E WITH OGONEK}"
        "\N{LATIN CAPITAL LETTER E WITH CARON}\N{LATIN CAPITAL LETTER G WITH BREVE}"
        "\N{LATIN CAPITAL LETTER I WITH DOT ABOVE}\N{LATIN CAPITAL LETTER L WITH ACUTE}"
        "\N{LATIN CAPITAL LETTER L WITH CARON}\N{LATIN CAPITAL LETTER L WITH STROKE}"
        "\N{LATIN CAPITAL LETTER N WITH ACUTE}\N{LATIN CAPITAL LETTER N WITH CARON}"
        "\N{LATIN CAPITAL LIGATURE OE}\N{LATIN CAPITAL LETTER R WITH CARON}"
        "\N{LATIN CAPITAL LETTER S WITH ACUTE}\N{LATIN CAPITAL LETTER S WITH CEDILLA}"
        "\N{LATIN CAPITAL LETTER S WITH CARON}\N{LATIN CAPITAL LETTER T WITH CEDILLA}"
        "\N{LATIN CAPITAL LETTER T WITH CARON}\N{LATIN CAPITAL LETTER U WITH RING ABOVE}"
        "\N{LATIN CAPITAL LETTER U WITH DOUBLE ACUTE}\N{LATIN CAPITAL LETTER Y WITH DIAERESIS}"
        "\N{LATIN CAPITAL LETTER Z WITH ACUTE}\N{LATIN CAPITAL LETTER Z WITH DOT ABOVE}"
        "\N{LATIN CAPITAL LETTER Z WITH CARON}\N{CYRILLIC CAPITAL LETTER GHE WITH UPTURN}"),
    "lower_accented": (
        "\N{LATIN SMALL LETTER SHARP S}\xe0-\xf1\N{LATIN SMALL LETTER A WITH BREVE}"
        "\N{LATIN SMALL LETTER A WITH OGONEK}\N{LATIN SMALL LETTER C WITH ACUTE}"
        "\N{LATIN SMALL LETTER C WITH CARON}\N{LATIN SMALL LETTER D WITH CARON}"
        "\N{LATIN SMALL LETTER D WITH STROKE}\N{LATIN SMALL LETTER E WITH OGONEK}"
        "\N{LATIN SMALL LETTER E WITH CARON}\N{LATIN SMALL LETTER G WITH BREVE}"
        "\N{LATIN SMALL LETTER L WITH ACUTE}\N{LATIN SMALL LETTER L WITH CARON}"
        "\N{LATIN SMALL LETTER L WITH STROKE}\N{LATIN SMALL LIGATURE OE}\N{LATIN SMALL LETTER R WITH ACUTE}"
        "\N{LATIN SMALL LETTER S WITH ACUTE}\N{LATIN SMALL LETTER S WITH CEDILLA}"
        "\N{LATIN SMALL LETTER S WITH CARON}\N{LATIN SMALL LETTER T WITH CARON}"
        "\N{LATIN SMALL LETTER U WITH DIAERESIS}\N{LATIN SMALL LETTER Z WITH ACUTE}"
        "\N{LATIN SMALL LETTER Z WITH DOT ABOVE}\N{LATIN SMALL LETTER Z WITH CARON}"
        "\N{CYRILLIC SMALL LETTER GHE WITH UPTURN}\N{LATIN SMALL LIGATURE FI}\N{LATIN SMALL LIGATURE FL}"),
    "upper_common": (
        "\N{LATIN CAPITAL LETTER THORN}\N{GREEK CAPITAL LETTER ALPHA}-\N{GREEK CAPITAL LETTER OMEGA}"
        "\N{GREEK CAPITAL LETTER ALPHA WITH TONOS}\N{GREEK CAPITAL LETTER EPSILON WITH TONOS}"
        "\N{GREEK CAPITAL LETTER ETA WITH TONOS}\N{GREEK CAPITAL LETTER IOTA WITH TONOS}"
        "\N{GREEK CAPITAL LETTER OMICRON WITH TONOS}\N{GREEK CAPITAL LETTER UPSILON WITH TONOS}"
        "\N{GREEK CAPITAL LETTER OMEGA WITH TONOS}\N{GREEK CAPITAL LETTER IOTA WITH DIALYTIKA}"
        "\N{GREEK CAPITAL LETTER UPSILON WITH DIALYTIKA}\N{CYRILLIC CAPITAL LETTER IO}-\N{CYRILLIC CAPITAL LETTER YA}"),
    "lower_common": (
        "\N{GREEK SMALL LETTER ALPHA}-\N{GREEK SMALL LETTER OMEGA}\N{GREEK SMALL LETTER ALPHA WITH TONOS}"
        "\N{GREEK SMALL LETTER EPSILON WITH TONOS}\N{GREEK SMALL LETTER ETA WITH TONOS}"
        "\N{GREEK SMALL LETTER IOTA WITH TONOS}\N{GREEK SMALL LETTER UPSILON WITH DIALYTIKA AND TONOS}"
        "\N{CYRILLIC SMALL LETTER A}-\N{CYRILLIC SMALL LETTER DZHE}"),
    "box": ("│┌┐┘├┤┬┼\N{BOX DRAWINGS DOUBLE HORIZONTAL}-\N{BOX DRAWINGS DOUBLE VERTICAL AND HORIZONTAL}"
            "▀▄█▌▐░▒▓"),
}

# ftfy/badness.py BADNESS_RE as its alternatives, each a sequence of
# character classes (formatted with MOJIBAKE_CATEGORIES). "^" anchors an
# alternative at the start of the text; BADNESS_RE's one optional element,
# [a-z]\s?[ÃÂ][ ], is written as its two expansions.
BADNESS_ALTERNATIVES = [
    ["[{c1}]"],
    ["[{bad}{lower_accented}{upper_accented}{box}{start_punctuation}{end_punctuation}{currency}{numeric}]",
     "[{bad}]"],
    ["[a-zA-Z]", "[{lower_common}{upper_common}]", "[{bad}]"],
    ["[{bad}]", "[{lower_accented}{upper_accented}{box}{start_punctuation}{end_punctuation}{currency}{numeric}]"],
    ["[{lower_accented}{lower_common}{box}{end_punctuation}{currency}{numeric}]", "[{upper_accented}]"],
    ["[{box}{end_punctuation}{currency}{numeric}]", "[{lower_accented}]"],
    ["[{lower_accented}{box}{end_punctuation}]", "[{currency}]"],
    [r"\s", "[{upper_accented}]", "[{currency}]"],
    ["[{upper_accented}{box}]", "[{numeric}]"],
    ["[{lower_accented}{upper_accented}{box}{currency}{end_punctuation}]", "[{start_punctuation}]",
     "[{numeric}]"],
    ["[{lower_accented}{upper_accented}{currency}{numeric}{box}]", "[{end_punctuation}]",
     "[{start_punctuation}]"],
    ["[{currency}{numeric}{box}]", "[{start_punctuation}]"],
    ["[a-z]", "[{upper_accented}]", "[{start_punctuation}{currency}]"],
    ["[{box}]", "[{kaomoji}]"],
    ["[{lower_accented}{upper_accented}{currency}{numeric}{start_punctuation}{end_punctuation}]", "[{box}]"],
    ["[{box}]", "[{end_punctuation}]"],
    ["[{lower_accented}{upper_accented}]", "[{end_punctuation}]", r"\w"],
    ["[Œœ]", "[^A-Za-z]"],
    ["[ÂÃÎÐ]", "[€Šš¢£Ÿž\xa0\xad®©°·»{start_punctuation}{end_punctuation}–—´]"],
    ["×", "[²³]"],
    ["[ØÙ]", "[{common}{currency}{bad}{numeric}{start_punctuation}ŸŠ®°µ»]",
     "[ØÙ]", "[{common}{currency}{bad}{numeric}{start_punctuation}ŸŠ®°µ»]"],
    ["à", "[²µ¹¼½¾]"],
    ["√", "[±∂†≠®™´≤≥¥µø]"],
    ["≈", "[°¢]"],
    ["‚", "Ä", "[ìîïòôúùû†°¢π]"],
    ["‚", "[âó]", "[àä°ê]"],
    ["в", "Ђ"],
    ["[ВГРС]", "[{c1}{bad}{start_punctuation}{end_punctuation}{currency}°µ]", "[ВГРС]"],
    ["Г", "ў", "В", "Ђ", "В", ".", "[A-Za-z ]"],
    ["Ã", "[\xa0¡]"],
    ["[a-z]", r"\s", "[ÃÂ]", "[ ]"],
    ["[a-z]", "[ÃÂ]", "[ ]"],
    ["^", "[ÃÂ]", "[ ]"],
    ["[a-z.,?!{end_punctuation}]", "Â", "[ {start_punctuation}{end_punctuation}]"],
    ["β", "€", "[™\xa0Ά\xad®°]"],
    ["[ΒΓΞΟ]", "[{c1}{bad}{start_punctuation}{end_punctuation}{currency}°]", "[ΒΓΞΟ]"],
]

# ftfy/chardata.py UTF8_CLUES (UTF8_DETECTOR_RE)
UTF8_CLUES = {
    "utf8_first_of_2": ("ÂÃÄÅÆÇÈÉÊËÌÍÎÏÐÑÒÓÔÕÖ×ØÙÚÛÜÝÞßĂĆČĎĐĘĚĞİĹŃŇŐŘŞŢŮŰ"
                        "ΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩΪΫάέήίВГДЕЖЗИЙКЛМНОПРСТУФХЦЧШЩЪЫЬЭЮЯ"),
    "utf8_first_of_3": "àáâãäåæçèéêëìíîïăćčďęěĺŕΰαβγδεζηθικλμνξοабвгдежзийклмноп",
    "utf8_first_of_4": "ðóđğπσру",
    "utf8_continuation": ("\x80-\xbfĄąĽľŁłŒœŚśŞşŠšŤťŸŹźŻżŽžƒˆˇ˘˛˜˝΄΅ΆΈΉΊΌΎΏЁЂЃЄЅІЇЈЉЊЋЌЎЏёђѓєѕіїјљњћќўџҐґ"
                          "–—―‘’‚“”„†‡•…‰‹›€№™ "),
    "utf8_continuation_strict": ("\x80-\xbfĄąĽľŁłŒœŚśŞşŠšŤťŸŹźŻżŽžƒˆˇ˘˛˜˝΄΅ΆΈΉΊΌΎΏЁЂЃЄЅІЇЈЉЊЋЌЎЏёђѓєѕіїјљњћќўџҐґ"
                                 "†‡•‰‹›€№™"),
}


def gen_ftfy_classes():
    classes = {}   # class text -> index
    sets = []

    def class_id(text):
        if text not in classes:
            pat = re.compile(text)   # "." is re's: anything but a newline
            classes[text] = len(sets)
            sets.append((text, ranges_of_set(members(pat))))
        return classes[text]

    alts = []
    for alt in BADNESS_ALTERNATIVES:
        anchored = alt[0] == "^"
        seq = [class_id(c.format(**MOJIBAKE_CATEGORIES) if "{" in c else c) for c in alt[anchored:]]
        alts.append((anchored, seq))
    clue_ids = {k: class_id("[" + v + "]") for k, v in UTF8_CLUES.items()}

    emit("/* The character classes of ftfy's BADNESS_RE (badness.py) and")
    emit(" * UTF8_DETECTOR_RE (chardata.py), evaluated with the re module. */")
    for i, (text, rngs) in enumerate(sets):
        emit(f"static const dfx__urange ftfy_class{i}_r[] = {{")
        emit_items([f"{{0x{a:X}, 0x{b:X}}}," for a, b in rngs], 6)
        emit("};")
    emit("const dfx__uset dfx__ftfy_classes[] = {")
    for i, (text, rngs) in enumerate(sets):
        emit(f"    {{ftfy_class{i}_r, {len(rngs)}}},")
    emit("};")
    emit()
    emit("/* BADNESS_RE's alternatives: each a sequence of classes above. */")
    emit("const dfx__badness_alt dfx__badness_alts[] = {")
    for anchored, seq in alts:
        assert len(seq) <= 8
        emit(f"    {{{'true' if anchored else 'false'}, {len(seq)}, {{{', '.join(map(str, seq))}}}}},")
    emit("};")
    emit(f"const size_t dfx__badness_alt_count = {len(alts)};")
    for k, v in clue_ids.items():
        emit(f"const int dfx__ftfy_{k} = {v};")
    emit()


def main():
    check_versions()
    emit("/* Generated by tools/gen_unicode_tables.py; do not edit. Regenerate with")
    emit(" *     /usr/bin/python3 tools/gen_unicode_tables.py > core/text/unicode_tables.c")
    emit(f" * (Python {sys.version.split()[0]}, unicodedata {unicodedata.unidata_version}, "
         f"regex {regex.__version__}).")
    emit(" * The Unicode classes, case and normalization data and ftfy's character")
    emit(" * tables the CLIP tokenizer needs; see text_internal.h. */")
    emit('#include "core/text/text_internal.h"')
    emit()
    gen_regex_classes()
    gen_python_classes()
    gen_lower()
    gen_nfc()
    gen_charmaps()
    gen_html()
    gen_translations()
    gen_ftfy_classes()
    sys.stdout.write("\n".join(OUT).rstrip("\n") + "\n")


if __name__ == "__main__":
    main()
