"""What the Python benchmark references share: JSON Lines files read as ~1 MB chunks of lines,
the unit of work their process pools map over."""


def chunks(files, size=1 << 20):
    for name in files:
        with open(name, "rb") as f:
            chunk, n = [], 0
            for line in f:
                chunk.append(line)
                n += len(line)
                if n >= size:
                    yield chunk
                    chunk, n = [], 0
            if chunk:
                yield chunk
