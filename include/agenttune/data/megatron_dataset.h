#pragma once
// Megatron-LM's indexed dataset (also NeMo's and GPT-NeoX's): PREFIX.bin holds the token ids back
// to back, PREFIX.idx indexes them:
//   "MMIDIDX\0\0", u64 version 1, u8 dtype code (8 = uint16, 4 = int32), u64 sequence count S,
//   u64 document count D+1, i32 lengths[S], i64 byte pointers[S], i64 document_indices[D+1]
//   (the first sequence of each document, 0 first, S last).
// A Megatron document (one or more contiguous sequences) is one document here, so a corpus
// tokenized for Megatron trains as it is, without re-tokenizing. The files carry no tokenizer,
// so the config states its vocabulary size and fingerprint (data.sources[].vocab_size,
// tokenizer_sha256); ids are checked against the model like any source's.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <vector>

#include "agenttune/util/files.h"

namespace agenttune {

struct MegatronIndex {
  std::filesystem::path prefix;
  std::shared_ptr<MappedFile> bin;
  int dtype_code = 0;                 // Megatron's DType code
  size_t element_size = 0;            // bytes per token id
  int64_t sequences = 0;
  std::vector<uint64_t> doc_offsets;  // token offset of each document's start, plus the total
};

// Reads and validates PREFIX.idx and PREFIX.bin (header, dtype, sizes, contiguous pointers,
// document indices); errors name the file and what was expected.
MegatronIndex read_megatron_index(const std::filesystem::path& prefix);

}  // namespace agenttune
