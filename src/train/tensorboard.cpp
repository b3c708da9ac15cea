// TensorBoard event files without protobuf: TFRecord framing and a hand-encoded Event proto.
#include <unistd.h>

#include <array>

#include "agenttune/train/metrics.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

constexpr std::array<uint32_t, 256> make_crc32c_table() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // reflected poly
    t[i] = c;
  }
  return t;
}
constexpr auto kCrcTable = make_crc32c_table();

// Protobuf wire encoding, only what Event/Summary need.
void put_varint(std::string& s, uint64_t v) {
  while (v >= 0x80) {
    s.push_back(static_cast<char>((v & 0x7f) | 0x80));
    v >>= 7;
  }
  s.push_back(static_cast<char>(v));
}
template <typename T>
void put_fixed(std::string& s, T v) {  // little-endian host
  char b[sizeof(T)];
  std::memcpy(b, &v, sizeof(T));
  s.append(b, sizeof(T));
}
void put_bytes(std::string& s, uint32_t field, std::string_view bytes) {
  put_varint(s, (field << 3) | 2);
  put_varint(s, bytes.size());
  s.append(bytes);
}

// Event { wall_time = 1 (double); step = 2 (int64); file_version = 3 | summary = 5 }.
std::string event_header(int64_t step) {
  std::string e;
  double wall = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  put_varint(e, (1 << 3) | 1);
  put_fixed(e, wall);
  put_varint(e, (2 << 3) | 0);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}

std::string hostname() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof(buf) - 1) != 0 || buf[0] == '\0') return "localhost";
  return buf;
}

}  // namespace

uint32_t crc32c(const void* data, size_t size, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  crc = ~crc;
  for (size_t i = 0; i < size; ++i) crc = kCrcTable[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
  return ~crc;
}

uint32_t masked_crc32c(const void* data, size_t size) {
  uint32_t crc = crc32c(data, size);
  return ((crc >> 15) | (crc << 17)) + 0xa282ead8u;
}

struct TensorBoardWriter::Impl {
  explicit Impl(const fs::path& path) : out(path) {}
  AppendFile out;

  void write_record(const std::string& data) {
    std::string frame;
    uint64_t len = data.size();
    put_fixed(frame, len);
    put_fixed(frame, masked_crc32c(frame.data(), 8));
    frame += data;
    put_fixed(frame, masked_crc32c(data.data(), data.size()));
    out.append(frame);
  }
};

namespace {
fs::path events_file(const fs::path& logdir) {
  create_dirs(logdir);
  auto secs = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch()).count();
  return logdir / fmt::format("events.out.tfevents.{}.{}", secs, hostname());
}
}  // namespace

// Appended to: a resume within the same second must not truncate the earlier file.
TensorBoardWriter::TensorBoardWriter(const fs::path& logdir) : impl_(std::make_unique<Impl>(events_file(logdir))) {
  // The version record tells TensorBoard to discard steps a restarted run writes again. Written
  // now, so a disk that is already full stops the run before its first step.
  std::string e = event_header(0);
  put_bytes(e, 3, "brain.Event:2");
  impl_->write_record(e);
  impl_->out.flush();
}

TensorBoardWriter::~TensorBoardWriter() {
  if (!impl_) return;
  try {
    impl_->out.flush();
  } catch (const Error&) {
    // A destructor must not throw; the run's own flush() calls already reported the failure.
  }
}

void TensorBoardWriter::add_scalar(const std::string& tag, double value, int64_t step) {
  std::string v;  // Summary.Value { tag = 1; simple_value = 2 (float) }
  put_bytes(v, 1, tag);
  put_varint(v, (2 << 3) | 5);
  put_fixed(v, static_cast<float>(value));
  std::string summary;  // Summary { repeated Value value = 1 }
  put_bytes(summary, 1, v);
  std::string e = event_header(step);
  put_bytes(e, 5, summary);
  impl_->write_record(e);
}

void TensorBoardWriter::flush() { impl_->out.flush(); }

const fs::path& TensorBoardWriter::path() const { return impl_->out.path(); }

}  // namespace agenttune
