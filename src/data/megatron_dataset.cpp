#include "agenttune/data/megatron_dataset.h"

#include <cstring>
#include <string_view>

#include "agenttune/util/error.h"

namespace agenttune {

namespace fs = std::filesystem;

namespace {

constexpr std::string_view kMagic{"MMIDIDX\0\0", 9};
constexpr size_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;

template <class T>
T read_at(const MappedFile& f, size_t at) {
  T v;
  std::memcpy(&v, f.data() + at, sizeof v);
  return v;
}

fs::path with_suffix(const fs::path& prefix, const char* suffix) {
  fs::path p = prefix;
  p += suffix;
  return p;
}

size_t element_size_of(int code, const fs::path& idx) {
  switch (code) {
    case 8: return 2;  // uint16: vocabularies below 65,500 (Megatron's preprocess_data.py)
    case 4: return 4;  // int32: larger vocabularies
    default:
      fail("{}: token dtype code {} is not supported (expected 8 = uint16 or 4 = int32, what Megatron writes "
           "for token ids)",
           idx.string(), code);
  }
}

}  // namespace

MegatronIndex read_megatron_index(const fs::path& prefix) {
  const fs::path idx_path = with_suffix(prefix, ".idx"), bin_path = with_suffix(prefix, ".bin");
  if (!fs::is_regular_file(idx_path) || !fs::is_regular_file(bin_path))
    fail("{}: a Megatron dataset needs {} and {}", prefix.string(), idx_path.filename().string(),
         bin_path.filename().string());
  auto idx = MappedFile::open(idx_path);
  if (idx->size() < kHeaderBytes || std::string_view(reinterpret_cast<const char*>(idx->data()), 9) != kMagic)
    fail("{}: not a Megatron index (expected the MMIDIDX header and {} header bytes, found {} bytes)",
         idx_path.string(), kHeaderBytes, idx->size());
  if (auto version = read_at<uint64_t>(*idx, 9); version != 1)
    fail("{}: index version {}, expected 1", idx_path.string(), version);
  MegatronIndex m;
  m.prefix = prefix;
  m.dtype_code = read_at<uint8_t>(*idx, 17);
  m.element_size = element_size_of(m.dtype_code, idx_path);
  const uint64_t seqs = read_at<uint64_t>(*idx, 18), doc_marks = read_at<uint64_t>(*idx, 26);
  // Checked before multiplying: a flipped count must not overflow the size arithmetic.
  const uint64_t room = idx->size() - kHeaderBytes;
  if (seqs > room / 12 || doc_marks > room / 8 || seqs * 12 + doc_marks * 8 != room)
    fail("{}: {} bytes, but {} sequences and {} document marks need {} (truncated or not an index of this "
         "format; multimodal indices are not supported)",
         idx_path.string(), idx->size(), seqs, doc_marks,
         seqs <= room / 12 && doc_marks <= room / 8 ? std::to_string(kHeaderBytes + seqs * 12 + doc_marks * 8)
                                                    : std::string("more than the file"));
  if (doc_marks < 1) fail("{}: no document marks (expected at least the leading 0)", idx_path.string());
  m.sequences = static_cast<int64_t>(seqs);
  const size_t lengths_at = kHeaderBytes, pointers_at = lengths_at + seqs * 4, docs_at = pointers_at + seqs * 8;

  // Sequences must lie back to back from byte 0: the writer always does so, and it lets a
  // document be one span of the .bin.
  uint64_t expected_pointer = 0;
  std::vector<uint64_t> seq_start(seqs + 1);
  for (uint64_t i = 0; i < seqs; ++i) {
    const int32_t len = read_at<int32_t>(*idx, lengths_at + i * 4);
    const int64_t ptr = read_at<int64_t>(*idx, pointers_at + i * 8);
    if (len < 0 || ptr < 0 || static_cast<uint64_t>(ptr) != expected_pointer)
      fail("{}: sequence {} has length {} at byte {}, expected a length >= 0 at byte {}", idx_path.string(), i, len,
           ptr, expected_pointer);
    seq_start[i] = expected_pointer / m.element_size;
    expected_pointer += static_cast<uint64_t>(len) * m.element_size;
  }
  seq_start[seqs] = expected_pointer / m.element_size;
  m.bin = MappedFile::open(bin_path);
  if (m.bin->size() != expected_pointer)
    fail("{}: {} bytes, but {} lists {} bytes of tokens (truncated, or the pair does not belong together)",
         bin_path.string(), m.bin->size(), idx_path.filename().string(), expected_pointer);

  int64_t prev = -1;
  for (uint64_t d = 0; d < doc_marks; ++d) {
    const int64_t first = read_at<int64_t>(*idx, docs_at + d * 8);
    const bool ok = d == 0 ? first == 0 : (first >= prev && first <= static_cast<int64_t>(seqs));
    if (!ok)
      fail("{}: document mark {} is {}, expected {}", idx_path.string(), d, first,
           d == 0 ? std::string("0") : fmt::format("a sequence index in [{}, {}]", prev, seqs));
    m.doc_offsets.push_back(seq_start[static_cast<size_t>(first)]);
    prev = first;
  }
  if (prev != static_cast<int64_t>(seqs))
    fail("{}: the last document mark is {}, expected the sequence count {}", idx_path.string(), prev, seqs);
  return m;
}

}  // namespace agenttune
