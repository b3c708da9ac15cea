#pragma once
// How a flat buffer is cut among the ranks of a shard group: zero padding up to a multiple of the
// group's size, then one contiguous slice of equal length per rank, in rank order. The engine's
// groups, the memory plan and checkpoint resharding all ask this type, so the slice a rank holds,
// the bytes the plan counts and the slice a resumed rank reads back are one formula.
#include <ATen/ATen.h>

#include <cstdint>

namespace agenttune::parallel {

class ShardLayout {
 public:
  ShardLayout() = default;
  ShardLayout(int64_t numel, int64_t world) : numel_(numel), world_(world) {}

  int64_t numel() const { return numel_; }
  int64_t world() const { return world_; }
  // numel rounded up to a multiple of the world: what is gathered and reduce-scattered.
  int64_t padded() const { return (numel_ + world_ - 1) / world_ * world_; }
  int64_t padding() const { return padded() - numel_; }
  // Every rank's slice has this length.
  int64_t shard_numel() const { return padded() / world_; }
  // Where `rank`'s slice starts in the padded buffer.
  int64_t offset(int64_t rank) const { return rank * shard_numel(); }

  // `rank`'s slice of a full, unpadded flat buffer (its padding reads as zeros). Resharding is
  // this call with the layout of the world that reads: a checkpoint's buffers are reassembled
  // whole, whatever world wrote them, and each reading rank takes its own slice.
  at::Tensor slice(const at::Tensor& full, int64_t rank) const {
    at::Tensor flat = full.reshape({-1});
    if (padding() > 0) flat = at::cat({flat, at::zeros({padding()}, flat.options())});
    return flat.narrow(0, offset(rank), shard_numel());
  }

 private:
  int64_t numel_ = 0;
  int64_t world_ = 1;
};

}  // namespace agenttune::parallel
