"""Oracle for the C++ TensorBoard writer: reads every events file in LOGDIR twice, with
TensorBoard's own EventAccumulator and with a strict TFRecord parser that checks both masked
CRC32Cs and decodes each record with TensorBoard's Event proto. Prints one JSON object."""
import glob
import json
import struct
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c


def strict_records(path):
    with open(path, "rb") as f:
        data = f.read()
    pos, out = 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (hcrc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        assert hcrc == masked_crc32c(header), f"{path}: bad length crc at {pos}"
        body = data[pos + 12:pos + 12 + length]
        (dcrc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        assert len(body) == length and dcrc == masked_crc32c(body), f"{path}: bad data crc at {pos}"
        ev = event_pb2.Event()
        ev.ParseFromString(body)
        out.append(ev)
        pos += 16 + length
    return out


def main(logdir):
    files = sorted(glob.glob(f"{logdir}/events.out.tfevents.*"))
    strict = []
    versions = []
    for path in files:
        for ev in strict_records(path):
            if ev.HasField("file_version"):
                versions.append(ev.file_version)
            for v in ev.summary.value:
                strict.append({"tag": v.tag, "step": ev.step, "value": v.simple_value,
                               "wall_time": ev.wall_time})
    acc = EventAccumulator(logdir)
    acc.Reload()
    accumulated = {tag: [[e.step, e.value] for e in acc.Scalars(tag)]
                   for tag in acc.Tags()["scalars"]}
    print(json.dumps({"files": len(files), "file_versions": versions, "strict": strict,
                      "accumulator": accumulated}))


if __name__ == "__main__":
    main(sys.argv[1])
