#pragma once
// Training checkpoints on disk (docs/formats.md):
//   ROOT/step_00001000/rank_00000.safetensors   this rank's tensors (model master weights,
//                                               optimizer moments), any names
//   ROOT/step_00001000/meta.json                step, tokens, world size, config, data state, RNG
//   ROOT/step_00001000/COMPLETE                 written last: a folder without it does not exist;
//                                               {"step": N, "files": {name: {bytes, crc32}}}, the
//                                               digest of every other file (computed while writing,
//                                               verified at load: a corrupt file is named)
//   ROOT/latest                                 text file naming the newest complete folder (for
//                                               people and scripts; resume scans the folders)
// Each checkpoint is written under a temporary name, fsynced, renamed, then `latest` is moved, so a
// kill at any moment leaves the previous checkpoint intact and loadable. Old ones beyond keep_last
// are deleted only after the new one is complete. The store holds one timeline: saving step N
// moves complete checkpoints newer than N (an abandoned run's) to ROOT/abandoned_step_*.
#include <cstdint>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <map>
#include <optional>
#include <vector>
#include <string>

#include "agenttune/io/file_digest.h"
#include "agenttune/io/tensor_source.h"

namespace agenttune {

struct CheckpointWrite {
  int64_t step = 0;
  int rank = 0;
  int world_size = 1;
  NamedTensors tensors;  // this rank's
  nlohmann::json meta;   // an object; "step" and "world_size" are set by the store
};

class CheckpointStore {
 public:
  // keep_last <= 0 keeps every checkpoint.
  CheckpointStore(std::filesystem::path root, int keep_last);

  // Single-process form (world_size must be 1): writes tensors + meta, marks complete, moves
  // latest, prunes old ones. Saving a step that already exists replaces it.
  std::filesystem::path save(const CheckpointWrite& w);

  // Multi-rank form, in phases so ranks can barrier in between (ranks share the filesystem):
  //   stage(w) on every rank writes its file into the step's temporary folder and returns it;
  //   barrier;
  //   commit(step, meta, world_size) on rank 0: checks every rank's file is there, then meta,
  //   COMPLETE, rename, latest, prune; returns the final folder;
  //   barrier (before any rank reads the checkpoint back).
  std::filesystem::path stage(const CheckpointWrite& w);
  std::filesystem::path commit(int64_t step, const nlohmann::json& meta, int world_size);

  // The newest complete checkpoint folder (the highest step whose COMPLETE exists), if any.
  std::optional<std::filesystem::path> latest() const;
  // Removes what interrupted saves left (temporary and incomplete folders). Only for a process
  // that owns the store (the trainer holds the run lock): another run's save may be in flight.
  void remove_leftovers() const;
  const std::filesystem::path& root() const { return root_; }

  static std::string folder_name(int64_t step);  // "step_00001000"
  static std::string rank_file_name(int rank);   // "rank_00000.safetensors"

 private:
  std::filesystem::path finish(const std::filesystem::path& tmp, int64_t step, const nlohmann::json& meta,
                               const std::vector<FileDigest>& rank_digests);
  void prune(int64_t just_written) const;
  void set_aside_newer_than(int64_t step) const;

  std::filesystem::path root_;
  int keep_last_;
};

struct LoadedCheckpoint {
  std::filesystem::path dir;
  nlohmann::json meta;
  int64_t step = 0;
  int world_size = 1;
  std::optional<std::map<std::string, FileDigest>> digests;  // from COMPLETE; none if saved before digests
};

// Opens a complete checkpoint folder: COMPLETE, meta.json (with step and world_size) and every
// rank's file must be there, and meta.json must match its digest; errors name the file.
LoadedCheckpoint open_checkpoint(const std::filesystem::path& dir);
// One rank's tensors of a checkpoint, after checking the file against its digest: zero-copy views
// of read-only memory, so clone before modifying. Every dtype the writer accepts (floats, integers, bool) reads back.
std::unique_ptr<TensorSource> open_rank_tensors(const std::filesystem::path& dir, int rank);

}  // namespace agenttune
