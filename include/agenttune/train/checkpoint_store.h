#pragma once
// Training checkpoints on disk (docs/formats.md):
//   ROOT/step_00001000/rank_00000.safetensors   this rank's tensors (model master weights,
//                                               optimizer moments), any names
//   ROOT/step_00001000/meta.json                step, tokens, world size, config, data state, RNG
//   ROOT/step_00001000/COMPLETE                 written last: a folder without it does not exist
//   ROOT/latest                                 text file naming the newest complete folder
// Each checkpoint is written under a temporary name, fsynced, renamed, then `latest` is moved, so a
// kill at any moment leaves the previous checkpoint intact and loadable. Old ones beyond keep_last
// are deleted only after the new one is complete.
#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "agenttune/io/tensor_source.h"

namespace agenttune {

struct CheckpointWrite {
  int64_t step = 0;
  int rank = 0;
  int world_size = 1;
  NamedTensors tensors;  // this rank's
  nlohmann::json meta;   // written by rank 0 only
};

class CheckpointStore {
 public:
  CheckpointStore(std::filesystem::path root, int keep_last);

  // Single-process form: writes tensors + meta, marks complete, moves latest, prunes old ones.
  std::filesystem::path save(const CheckpointWrite& w);

  // Multi-rank form, in three phases so ranks can barrier in between:
  //   stage(w) on every rank writes its file into the step's temporary folder;
  //   commit(step, meta) on rank 0 after all ranks staged: meta, COMPLETE, rename, latest, prune.
  std::filesystem::path stage(const CheckpointWrite& w);
  std::filesystem::path commit(int64_t step, const nlohmann::json& meta, int world_size);

  // The newest complete checkpoint folder (via latest, falling back to a scan), if any.
  std::optional<std::filesystem::path> latest() const;
  const std::filesystem::path& root() const { return root_; }

  static std::string folder_name(int64_t step);  // "step_00001000"

 private:
  std::filesystem::path root_;
  int keep_last_;
};

struct LoadedCheckpoint {
  std::filesystem::path dir;
  nlohmann::json meta;
  int64_t step = 0;
  int world_size = 1;
};

// Opens a complete checkpoint folder (errors name the folder when COMPLETE or meta.json is missing).
LoadedCheckpoint open_checkpoint(const std::filesystem::path& dir);
// One rank's tensors of a checkpoint (zero-copy views; clone before modifying).
std::unique_ptr<TensorSource> open_rank_tensors(const std::filesystem::path& dir, int rank);

}  // namespace agenttune
