#pragma once
// A data.sources[] entry opened, whatever its format: a folder `agenttune prepare` wrote, or a
// Megatron indexed dataset. Everything that reads a source's counts (the data resolution, the resume
// check, inspect, the trainer's vocabulary check) goes through source_manifest, so both formats
// answer the same questions the same way.
#include <string>

#include "agenttune/data/mixture.h"
#include "agenttune/data/token_shards.h"

namespace agenttune {

// The prepared folder's manifest.json, or for a Megatron dataset one made from its index and
// the config's vocab_size and tokenizer_sha256. Errors name the file.
ShardManifest source_manifest(const MixtureSource& s);

TokenDataset open_source(const MixtureSource& s, const std::string& expected_tokenizer_sha256 = "");

}  // namespace agenttune
