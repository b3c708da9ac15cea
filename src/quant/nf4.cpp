#include "agenttune/quant/nf4.h"

#include <ATen/ATen.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <memory>
#include <mutex>

#include "agenttune/util/error.h"

namespace agenttune::quant {

namespace {

// bnb's CPU tensors hold these as fp32 rounded from Python floats (doubles); rounding the same
// doubles keeps the table bit-identical.
constexpr std::array<double, 16> kNf4Levels = {
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0};

template <size_t N>
at::Tensor cpu_tensor(const std::array<float, N>& values) {
  return at::tensor(at::ArrayRef<float>(values.data(), N), at::kFloat);
}

// bnb's bounds for nearest-level search: (code[:-1] + code[1:]) / 2 in fp32, searched with
// bucketize (a value on a bound goes to the lower level).
at::Tensor midpoints(const at::Tensor& sorted_levels) {
  const int64_t n = sorted_levels.size(0);
  return (sorted_levels.slice(0, 0, n - 1) + sorted_levels.slice(0, 1, n)) / 2;
}

// bnb's blockwise scaling (its default kernels, shared by the 4-bit and the 8-bit quantiser):
// full blocks are multiplied by the reciprocal of their absmax, a trailing partial block is
// divided by its own; the partial block's stored absmax is the clamped one, as bnb stores it.
struct Scaled {
  at::Tensor absmax;  // fp32 [blocks]
  at::Tensor scaled;  // fp32 [n], in [-1, 1]
};

Scaled scale_blocks(const at::Tensor& flat, int64_t blocksize) {
  const int64_t n = flat.numel();
  const int64_t rem = n % blocksize;
  const int64_t full = n - rem;
  std::vector<at::Tensor> absmax, scaled;
  if (full > 0) {
    const auto blocks = flat.slice(0, 0, full).view({full / blocksize, blocksize});
    auto am = blocks.abs().amax(-1);
    scaled.push_back(at::clamp(blocks * at::reciprocal(am.clamp_min(1e-38)).unsqueeze(1), -1, 1).reshape(-1));
    absmax.push_back(std::move(am));
  }
  if (rem > 0) {
    const auto tail = flat.slice(0, full, n);
    auto am = tail.abs().max().clamp_min(1e-38);
    scaled.push_back(at::clamp(tail / am, -1, 1));
    absmax.push_back(am.unsqueeze(0));
  }
  return {absmax.size() == 1 ? absmax[0] : at::cat(absmax), scaled.size() == 1 ? scaled[0] : at::cat(scaled)};
}

void check_same_device(const at::Tensor& t, const Nf4Tables& tables, const char* what) {
  if (t.device() != tables.dynamic.device())
    fail("NF4: {} is on {} but the lookup tables are on {}", what, t.device().str(), tables.dynamic.device().str());
}

int64_t product(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace

const std::array<float, 16>& nf4_levels() {
  static const std::array<float, 16> levels = [] {
    std::array<float, 16> out{};
    for (size_t i = 0; i < out.size(); ++i) out[i] = static_cast<float>(kNf4Levels[i]);
    return out;
  }();
  return levels;
}

const std::array<float, 256>& dynamic_map() {
  // bnb computes the midpoints of an fp32 linspace with tensor ops and scales them by a decade
  // (an fp32 multiply by a Python float); the same LibTorch ops give the same bits.
  static const std::array<float, 256> map = [] {
    std::vector<float> data;
    constexpr int kExponentBits = 7;
    for (int i = 0; i < kExponentBits; ++i) {
      const auto bounds = at::linspace(0.1, 1.0, (int64_t{1} << i) + 1, at::kFloat);
      const auto means = midpoints(bounds);
      const double decade = std::pow(10.0, -(kExponentBits - 1) + i);
      for (const auto& part : {means * decade, means * -decade}) {
        const auto c = part.contiguous();
        data.insert(data.end(), c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
      }
    }
    data.push_back(0.0f);
    data.push_back(1.0f);
    if (data.size() != 256) fail("NF4: the dynamic map has {} levels, expected 256", data.size());
    std::sort(data.begin(), data.end());
    std::array<float, 256> out{};
    std::copy(data.begin(), data.end(), out.begin());
    return out;
  }();
  return map;
}

Nf4Tables make_nf4_tables(c10::Device device) {
  const auto& levels = nf4_levels();
  std::array<float, 512> pairs{};
  for (size_t b = 0; b < 256; ++b) {
    pairs[2 * b] = levels[b >> 4];
    pairs[2 * b + 1] = levels[b & 15];
  }
  const auto nf4 = cpu_tensor(levels);
  const auto dynamic = cpu_tensor(dynamic_map());
  return {cpu_tensor(pairs).view({256, 2}).to(device), midpoints(nf4).to(device), dynamic.to(device),
          midpoints(dynamic).to(device)};
}

const Nf4Tables& nf4_tables(c10::Device device) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, std::unique_ptr<Nf4Tables>> cache;  // (type, index): stable addresses
  std::lock_guard<std::mutex> lock(mu);
  auto& slot = cache[{static_cast<int>(device.type()), static_cast<int>(device.index())}];
  if (!slot) slot = std::make_unique<Nf4Tables>(make_nf4_tables(device));
  return *slot;
}

int64_t Nf4Tensor::numel() const { return product(shape); }

int64_t nf4_blocks(int64_t numel) { return (numel + kNf4Blocksize - 1) / kNf4Blocksize; }

int64_t nf4_absmax2_blocks(int64_t numel) { return (nf4_blocks(numel) + kAbsmaxBlocksize - 1) / kAbsmaxBlocksize; }

Nf4Tensor quantize_nf4(const at::Tensor& weight, const Nf4Tables& tables) {
  const auto dtype = weight.scalar_type();
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf)
    fail("NF4 quantises float32, bfloat16 or float16 weights, got {}", c10::toString(dtype));
  if (weight.numel() == 0) fail("NF4: cannot quantise an empty weight (shape [{}])", fmt::join(weight.sizes(), ", "));
  check_same_device(weight, tables, "the weight");

  Nf4Tensor q;
  q.shape = weight.sizes().vec();
  auto s = scale_blocks(weight.reshape(-1).to(at::kFloat), kNf4Blocksize);
  auto scaled = s.scaled;
  if (scaled.numel() % 2 != 0) scaled = at::constant_pad_nd(scaled, {0, 1}, 0);
  const auto idx = at::bucketize(scaled, tables.nf4_bounds, /*out_int32=*/true).to(at::kByte);
  const int64_t m = idx.numel();
  q.codes = idx.slice(0, 0, m, 2).bitwise_left_shift(4).bitwise_or(idx.slice(0, 1, m, 2));

  // Double quantisation: absmax - mean(absmax) through the 8-bit dynamic map in blocks of 256.
  q.offset = s.absmax.mean().reshape({1});
  auto d = scale_blocks(s.absmax - q.offset, kAbsmaxBlocksize);
  q.absmax_codes = at::bucketize(d.scaled, tables.dynamic_bounds, /*out_int32=*/true).to(at::kByte);
  q.absmax2 = std::move(d.absmax);
  return q;
}

at::Tensor nf4_absmax(const Nf4Tensor& q, const Nf4Tables& tables) {
  const int64_t n = q.numel();
  const int64_t blocks = nf4_blocks(n);
  const int64_t blocks2 = nf4_absmax2_blocks(n);
  check_same_device(q.codes, tables, "the quantised weight");
  if (q.absmax_codes.numel() != blocks || q.absmax2.numel() != blocks2 || q.offset.numel() != 1 ||
      q.codes.numel() != (n + 1) / 2)
    fail("NF4: a weight of shape [{}] has {} code bytes, {} absmax codes, {} absmax2 values and {} offsets; "
         "expected {}, {}, {} and 1",
         fmt::join(q.shape, ", "), q.codes.numel(), q.absmax_codes.numel(), q.absmax2.numel(), q.offset.numel(),
         (n + 1) / 2, blocks, blocks2);
  // Each absmax2 covers 256 consecutive absmax values: a broadcast view, no data-dependent op.
  const auto scale2 = q.absmax2.unsqueeze(1).expand({blocks2, kAbsmaxBlocksize}).reshape(-1).slice(0, 0, blocks);
  // Two ops, as bnb does them (dequantize_blockwise, then += offset): no fused multiply-add.
  return tables.dynamic.index_select(0, q.absmax_codes.to(at::kInt)) * scale2 + q.offset;
}

void dequantize_nf4_into(const Nf4Tensor& q, const at::Tensor& out, const Nf4Tables& tables) {
  const int64_t n = q.numel();
  if (out.numel() != n || !out.is_contiguous() || !at::isFloatingType(out.scalar_type()))
    fail("NF4: cannot dequantise a weight of shape [{}] into a {} tensor of shape [{}] (contiguous: {})",
         fmt::join(q.shape, ", "), c10::toString(out.scalar_type()), fmt::join(out.sizes(), ", "), out.is_contiguous());
  check_same_device(out, tables, "the output");
  const auto absmax = nf4_absmax(q, tables);
  // A code byte indexes the table of level pairs: both nibbles in one gather, high nibble first.
  const auto levels = tables.byte_pairs.index_select(0, q.codes.to(at::kInt)).view(-1);
  // fp32 products rounded once into out's dtype, as bnb's fp32 compute followed by .to(dtype).
  const auto flat = out.view(-1);
  const int64_t blocks = n / kNf4Blocksize;
  const int64_t full = blocks * kNf4Blocksize;
  if (blocks > 0) {
    auto dst = flat.slice(0, 0, full).view({blocks, kNf4Blocksize});
    at::mul_out(dst, levels.slice(0, 0, full).view({blocks, kNf4Blocksize}), absmax.slice(0, 0, blocks).unsqueeze(1));
  }
  if (full < n) {
    auto dst = flat.slice(0, full, n);
    at::mul_out(dst, levels.slice(0, full, n), absmax.slice(0, blocks, blocks + 1));
  }
}

at::Tensor dequantize_nf4(const Nf4Tensor& q, c10::ScalarType dtype, const Nf4Tables& tables) {
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf)
    fail("NF4 dequantises to float32, bfloat16 or float16, got {}", c10::toString(dtype));
  auto out = at::empty(q.shape, q.codes.options().dtype(dtype));
  dequantize_nf4_into(q, out, tables);
  return out;
}

Nf4RecordLayout nf4_record_layout(int64_t numel) {
  if (numel <= 0) fail("NF4: a record needs a weight with at least one element, got {}", numel);
  Nf4RecordLayout l;
  l.numel = numel;
  l.absmax2_at = 4;  // after the fp32 offset
  l.absmax_codes_at = l.absmax2_at + 4 * nf4_absmax2_blocks(numel);
  l.codes_at = l.absmax_codes_at + nf4_blocks(numel);
  const int64_t end = l.codes_at + (numel + 1) / 2;
  l.bytes = (end + kNf4RecordAlignment - 1) / kNf4RecordAlignment * kNf4RecordAlignment;
  return l;
}

namespace {

void check_record(const at::Tensor& record, const Nf4RecordLayout& l) {
  if (record.scalar_type() != at::kByte || record.dim() != 1 || !record.is_contiguous() || record.numel() != l.bytes)
    fail("NF4: a record of a {}-element weight is {} contiguous uint8 bytes; got a {} tensor of shape [{}]", l.numel,
         l.bytes, c10::toString(record.scalar_type()), fmt::join(record.sizes(), ", "));
}

}  // namespace

void pack_nf4(const Nf4Tensor& q, const at::Tensor& record) {
  const auto l = nf4_record_layout(q.numel());
  check_record(record, l);
  const int64_t end = l.codes_at + q.codes.numel();
  record.slice(0, 0, l.absmax2_at).copy_(q.offset.contiguous().view(at::kByte));
  record.slice(0, l.absmax2_at, l.absmax_codes_at).copy_(q.absmax2.contiguous().view(at::kByte));
  record.slice(0, l.absmax_codes_at, l.codes_at).copy_(q.absmax_codes);
  record.slice(0, l.codes_at, end).copy_(q.codes);
  record.slice(0, end, l.bytes).zero_();
}

Nf4Tensor nf4_record_view(const at::Tensor& record, std::vector<int64_t> shape) {
  const auto l = nf4_record_layout(product(shape));
  check_record(record, l);
  if (record.storage_offset() % 4 != 0)
    fail("NF4: a record must start 4-byte aligned in its buffer, this one starts at byte {}", record.storage_offset());
  Nf4Tensor q;
  q.shape = std::move(shape);
  q.offset = record.slice(0, 0, l.absmax2_at).view(at::kFloat);
  q.absmax2 = record.slice(0, l.absmax2_at, l.absmax_codes_at).view(at::kFloat);
  q.absmax_codes = record.slice(0, l.absmax_codes_at, l.codes_at);
  q.codes = record.slice(0, l.codes_at, l.codes_at + (l.numel + 1) / 2);
  return q;
}

}  // namespace agenttune::quant
