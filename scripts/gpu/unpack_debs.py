"""Unpacks .deb files into a private prefix without dpkg (the GPU machine has no apt/dpkg):
a .deb is an `ar` archive whose data.tar.{xz,zst,gz} holds the files. Absolute symlinks
(zlib1g-dev's libz.so -> /lib/...) are re-pointed into the prefix so nothing resolves to the host.

usage: unpack_debs.py PREFIX DEB...
"""
import io
import os
import sys
import tarfile


def ar_members(data):
    if data[:8] != b"!<arch>\n":
        raise ValueError("not an ar archive")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        yield name, data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)


def unpack(deb, prefix):
    with open(deb, "rb") as f:
        data = f.read()
    for name, body in ar_members(data):
        if not name.startswith("data.tar"):
            continue
        if name.endswith(".zst"):
            raise SystemExit(f"{deb}: data.tar.zst needs zstd, which Python's tarfile lacks")
        with tarfile.open(fileobj=io.BytesIO(body)) as tar:
            tar.extractall(prefix, filter="tar")
        return
    raise SystemExit(f"{deb}: no data.tar member")


def main():
    prefix = os.path.abspath(sys.argv[1])
    os.makedirs(prefix, exist_ok=True)
    for deb in sys.argv[2:]:
        unpack(deb, prefix)
    for root, _, files in os.walk(prefix):
        for f in files:
            path = os.path.join(root, f)
            if os.path.islink(path) and os.path.isabs(os.readlink(path)):
                target = prefix + os.readlink(path)
                os.remove(path)
                os.symlink(target, path)
    print(f"unpacked {len(sys.argv) - 2} .debs into {prefix}")


if __name__ == "__main__":
    main()
