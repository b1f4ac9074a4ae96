"""Read ZIP and tar.gz archives from outside in memory, refusing every hostile construct.

Nothing is ever extracted to disk. Refused: names with "..", absolute or drive paths, NUL bytes,
symbolic and hard links, devices and FIFOs, encrypted ZIP members, duplicate names, members whose
declared size is false or over the caps, compression bombs (ratio and total decompressed bytes).
"""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from flows.helios.xsdtext import error_fr

MIB = 1024 * 1024
DEFAULT_MAX_TOTAL = 150 * MIB
DEFAULT_MAX_MEMBERS = 500
DEFAULT_MAX_RATIO = 100  # uncompressed / compressed, checked above RATIO_FLOOR bytes
RATIO_FLOOR = 1 * MIB
_CHUNK = 64 * 1024


class UnsafeArchive(ValueError):
    """An archive demat refuses to read; `rule` is a stable code, the message is French."""

    def __init__(self, rule: str, message: str, member: str = "") -> None:
        super().__init__(message)
        self.rule = rule
        self.member = member


def check_member_name(name: str) -> str:
    """Return the normalised relative name, or raise UnsafeArchive."""
    if not name or "\x00" in name:
        raise UnsafeArchive("ARCHIVE-NOM", "nom de fichier vide ou contenant un octet nul dans l'archive", name)
    unified = name.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise UnsafeArchive("ARCHIVE-CHEMIN-ABSOLU", f"chemin absolu refusé dans l'archive : « {name} »", name)
    parts = [p for p in unified.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchive("ARCHIVE-CHEMIN-REMONTANT", f"chemin remontant (« .. ») refusé dans l'archive : « {name} »", name)
    if not parts:
        raise UnsafeArchive("ARCHIVE-NOM", f"nom de fichier invalide dans l'archive : « {name} »", name)
    return "/".join(parts)


def _ignored(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return name.startswith("__MACOSX/") or base.startswith(".") or base in ("Thumbs.db", "desktop.ini")


def read_zip(source: str | Path | bytes, *, max_total_bytes: int = DEFAULT_MAX_TOTAL,
             max_member_bytes: int | None = None, max_members: int = DEFAULT_MAX_MEMBERS,
             max_ratio: int = DEFAULT_MAX_RATIO) -> dict[str, bytes]:
    """Members of a ZIP (normalised name -> bytes), in archive order; directories and system files skipped."""
    max_member_bytes = max_member_bytes or max_total_bytes
    fh = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")  # noqa: SIM115
    try:
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise UnsafeArchive("ARCHIVE-ILLISIBLE", f"le fichier n'est pas une archive ZIP lisible : {error_fr(exc)}") from exc
        with zf:
            infos = zf.infolist()
            if len(infos) > max_members:
                raise UnsafeArchive("ARCHIVE-TROP-DE-FICHIERS",
                                    f"l'archive contient {len(infos)} fichiers (maximum {max_members})")
            declared_total = 0
            out: dict[str, bytes] = {}
            for info in infos:
                name = check_member_name(info.filename)
                mode = (info.external_attr >> 16) & 0xFFFF
                kind = stat.S_IFMT(mode)
                if kind == stat.S_IFLNK:
                    raise UnsafeArchive("ARCHIVE-LIEN", f"lien symbolique refusé dans l'archive : « {name} »", name)
                if info.is_dir() or kind == stat.S_IFDIR:
                    continue
                if kind not in (0, stat.S_IFREG):
                    raise UnsafeArchive("ARCHIVE-TYPE", f"fichier spécial refusé dans l'archive : « {name} »", name)
                if info.flag_bits & 0x1:
                    raise UnsafeArchive("ARCHIVE-CHIFFREE", f"fichier chiffré (protégé par mot de passe) refusé : « {name} »", name)
                if name in out:
                    raise UnsafeArchive("ARCHIVE-DOUBLON", f"le fichier « {name} » figure deux fois dans l'archive", name)
                if info.file_size > max_member_bytes:
                    raise UnsafeArchive("ARCHIVE-TAILLE",
                                        f"« {name} » annonce {info.file_size} octets (maximum {max_member_bytes})", name)
                declared_total += info.file_size
                if declared_total > max_total_bytes:
                    raise UnsafeArchive("ARCHIVE-TAILLE",
                                        f"l'archive décompressée dépasse {max_total_bytes} octets", name)
                if info.file_size > RATIO_FLOOR and (
                    info.compress_size == 0 or info.file_size / info.compress_size > max_ratio
                ):
                    raise UnsafeArchive("ARCHIVE-BOMBE",
                                        f"taux de compression anormal pour « {name} » (bombe de décompression ?)", name)
                data = _read_zip_member(zf, info, name)
                if _ignored(name):
                    continue
                out[name] = data
            return out
    finally:
        fh.close()


def _read_zip_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str) -> bytes:
    buf = bytearray()
    try:
        with zf.open(info) as member:
            while True:
                chunk = member.read(_CHUNK)
                if not chunk:
                    break
                buf += chunk
                if len(buf) > info.file_size:
                    break
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError, ValueError, NotImplementedError) as exc:
        raise UnsafeArchive("ARCHIVE-CORROMPUE",
                            f"contenu corrompu ou taille déclarée fausse pour « {name} » : {error_fr(exc)}", name) from exc
    if len(buf) != info.file_size:
        raise UnsafeArchive("ARCHIVE-TAILLE-FAUSSE",
                            f"« {name} » : taille déclarée {info.file_size} octets, lue {len(buf)}", name)
    return bytes(buf)


def gunzip_capped(data: bytes, max_bytes: int) -> bytes:
    """Decompress gzip (possibly multi-member) without ever holding more than max_bytes.

    Input is fed in chunks and output drawn in chunks, so that neither a bomb nor a large archive
    costs more than linear time and bounded memory.
    """
    out = bytearray()
    view = memoryview(data)
    pos = 0

    def take(chunk: bytes) -> None:
        out.extend(chunk)
        if len(out) > max_bytes:
            raise UnsafeArchive("ARCHIVE-BOMBE",
                                f"l'archive décompressée dépasse {max_bytes} octets (bombe de décompression ?)")

    try:
        while pos < len(view):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
            while not d.eof:
                if pos >= len(view):
                    raise UnsafeArchive("ARCHIVE-ILLISIBLE", "flux gzip tronqué")
                piece = view[pos:pos + _CHUNK]
                pos += len(piece)
                take(d.decompress(piece, _CHUNK))
                while d.unconsumed_tail and not d.eof:
                    take(d.decompress(d.unconsumed_tail, _CHUNK))
            pos -= len(d.unused_data)
            if bytes(view[pos:pos + 2]) != b"\x1f\x8b":
                break  # trailing bytes after the last member: ignored, as gzip does
    except zlib.error as exc:
        raise UnsafeArchive("ARCHIVE-ILLISIBLE", f"flux gzip corrompu : {error_fr(exc)}") from exc
    return bytes(out)


def read_tar(data: bytes, *, max_total_bytes: int = DEFAULT_MAX_TOTAL, max_member_bytes: int | None = None,
             max_members: int = DEFAULT_MAX_MEMBERS) -> dict[str, bytes]:
    """Members of a tar or tar.gz held in memory (name -> bytes), in archive order."""
    max_member_bytes = max_member_bytes or max_total_bytes
    # tar headers (512 B per member) and padding: a little slack over the payload cap
    raw = gunzip_capped(data, max_total_bytes + 2 * MIB) if data[:2] == b"\x1f\x8b" else data
    out: dict[str, bytes] = {}
    total = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            count = 0
            for member in tar:
                count += 1
                if count > max_members:
                    raise UnsafeArchive("ARCHIVE-TROP-DE-FICHIERS", f"l'archive contient plus de {max_members} fichiers")
                name = check_member_name(member.name)
                if member.issym() or member.islnk():
                    raise UnsafeArchive("ARCHIVE-LIEN",
                                        f"lien ({'symbolique' if member.issym() else 'physique'}) refusé dans l'archive : « {name} »", name)
                if member.isdir():
                    continue
                if not member.isreg():
                    raise UnsafeArchive("ARCHIVE-TYPE", f"fichier spécial refusé dans l'archive : « {name} »", name)
                if name in out:
                    raise UnsafeArchive("ARCHIVE-DOUBLON", f"le fichier « {name} » figure deux fois dans l'archive", name)
                if member.size > max_member_bytes:
                    raise UnsafeArchive("ARCHIVE-TAILLE", f"« {name} » annonce {member.size} octets (maximum {max_member_bytes})", name)
                total += member.size
                if total > max_total_bytes:
                    raise UnsafeArchive("ARCHIVE-TAILLE", f"l'archive décompressée dépasse {max_total_bytes} octets", name)
                fh = tar.extractfile(member)
                content = fh.read(member.size + 1) if fh is not None else b""
                if len(content) != member.size:
                    raise UnsafeArchive("ARCHIVE-TAILLE-FAUSSE",
                                        f"« {name} » : taille déclarée {member.size} octets, lue {len(content)}", name)
                out[name] = content
            # tarfile stops silently at an invalid header: the block after the last member must be the
            # end-of-archive marker (zeros), else a declared size was smaller than the data that followed.
            # Bytes after the marker are ignored (GNU tar leaves old buffer content there).
            if raw[tar.offset:tar.offset + 512].strip(b"\x00"):
                raise UnsafeArchive("ARCHIVE-TAILLE-FAUSSE",
                                    "données inattendues après le dernier fichier de l'archive (taille déclarée fausse ?)")
    except UnsafeArchive:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise UnsafeArchive("ARCHIVE-ILLISIBLE", f"archive tar illisible ou tronquée : {error_fr(exc)}") from exc
    return out
