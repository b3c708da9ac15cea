#pragma once
// NF4 with double quantisation, byte for byte as bitsandbytes stores a QLoRA base weight
// (`quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)`, bnb 0.50's
// device-agnostic kernels, which are what its CUDA kernels compute):
//   - the weight, flattened row-major, is cut into blocks of 64; each block's absmax (fp32) scales
//     it into [-1, 1] and each value becomes the index of the nearest of the 16 NF4 levels (ties to
//     the lower index); two indices per byte, element 2k in the high nibble, an odd count padded
//     with a zero nibble;
//   - the absmax values are themselves quantised: offset = mean(absmax), and absmax - offset goes
//     through 8-bit blockwise quantisation (blocks of 256, bnb's signed dynamic map) into one code
//     byte per block of 64 plus one fp32 absmax2 per 256 of those.
// Reconstruction: w[i] = nf4[idx[i]] * (dyn[qabsmax[i / 64]] * absmax2[i / 16384] + offset),
// computed in fp32 and rounded once to the requested dtype, as bnb's dequantize_4bit does.
//
// Everything runs as LibTorch ops on the tensors' own device (CPU, CUDA, the tests' fake device):
// no per-element host loop and, given Nf4Tables made once per device, no host sync, so the engine
// can dequantise a gathered unit on the GPU every micro-batch.
//
// A quantised weight also has a flat byte form (an Nf4 record) so that a unit's quantised weights
// can live in one uint8 buffer that is sharded and all-gathered like any flat parameter buffer.
#include <ATen/core/Tensor.h>

#include <array>
#include <cstdint>
#include <vector>

namespace agenttune::quant {

inline constexpr int64_t kNf4Blocksize = 64;        // weights per absmax
inline constexpr int64_t kAbsmaxBlocksize = 256;    // absmax values per absmax2 (double quantisation)
inline constexpr int64_t kNf4RecordAlignment = 16;  // record sizes are multiples of this (fp32 fields stay aligned)

// The 16 NF4 levels (bnb's get_4bit_type("nf4")), index = nibble value.
const std::array<float, 16>& nf4_levels();
// bnb's create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): 256 sorted levels in
// [-1, 1], computed as bnb computes them (fp32 linspace midpoints times decades).
const std::array<float, 256>& dynamic_map();

// The lookup tables on one device. Made once (one small upload each) and reused, so that
// quantising and dequantising never copy from the host.
struct Nf4Tables {
  at::Tensor byte_pairs;      // fp32 [256, 2]: the two levels a code byte holds (high nibble first)
  at::Tensor nf4_bounds;      // fp32 [15]: midpoints between consecutive NF4 levels
  at::Tensor dynamic;         // fp32 [256]: dynamic_map()
  at::Tensor dynamic_bounds;  // fp32 [255]: midpoints between consecutive dynamic levels
};
Nf4Tables make_nf4_tables(c10::Device device);
// The tables of `device`, made on first use and kept for the process (thread-safe): what a layer
// that dequantises every micro-batch uses, so only its first call uploads.
const Nf4Tables& nf4_tables(c10::Device device);

// One quantised weight, bnb's packed tensor plus its nested QuantState.
struct Nf4Tensor {
  std::vector<int64_t> shape;  // the weight's shape
  at::Tensor codes;            // uint8 [(numel + 1) / 2]
  at::Tensor absmax_codes;     // uint8 [ceil(numel / 64)]: QuantState.absmax (nested)
  at::Tensor absmax2;          // fp32 [ceil(absmax blocks / 256)]: QuantState.state2.absmax
  at::Tensor offset;           // fp32 [1]: QuantState.offset

  int64_t numel() const;
};

int64_t nf4_blocks(int64_t numel);        // absmax values: ceil(numel / 64)
int64_t nf4_absmax2_blocks(int64_t numel);  // absmax2 values: ceil(nf4_blocks / 256)

// `weight` (fp32, bf16 or fp16, any shape, on `tables`' device). Throws agenttune::Error for
// another dtype, an empty weight or a device mismatch.
Nf4Tensor quantize_nf4(const at::Tensor& weight, const Nf4Tables& tables);
// The absmax per block of 64 as fp32, reconstructed from the double quantisation.
at::Tensor nf4_absmax(const Nf4Tensor& q, const Nf4Tables& tables);
// The weight in `dtype` (fp32, bf16 or fp16), shaped q.shape.
at::Tensor dequantize_nf4(const Nf4Tensor& q, c10::ScalarType dtype, const Nf4Tables& tables);
// The same values written into `out` (contiguous, q.numel() elements, a floating dtype): what the
// engine uses to fill a module weight's storage without another buffer.
void dequantize_nf4_into(const Nf4Tensor& q, const at::Tensor& out, const Nf4Tables& tables);

// ---- the flat byte form ----
// A record is [offset f32][absmax2 f32 x B2][absmax codes u8 x B][codes u8 x ceil(n/2)] padded to
// a multiple of kNf4RecordAlignment bytes. The shape is not stored: the engine knows it from the model.
struct Nf4RecordLayout {
  int64_t numel = 0;
  int64_t absmax2_at = 0;  // byte offsets inside the record
  int64_t absmax_codes_at = 0;
  int64_t codes_at = 0;
  int64_t bytes = 0;  // the record's size, padding included
};
Nf4RecordLayout nf4_record_layout(int64_t numel);
inline int64_t nf4_record_bytes(int64_t numel) { return nf4_record_layout(numel).bytes; }

// Writes `q` into `record` (uint8, 1-D, contiguous, exactly nf4_record_bytes(q.numel()) bytes, on
// q's device; typically a slice of a larger flat buffer). The padding is written as zeros.
void pack_nf4(const Nf4Tensor& q, const at::Tensor& record);
// Views into `record` (no copy): the weight of `shape` that pack_nf4 wrote there. `record` must
// start at a byte offset of its storage that is a multiple of 4, for the fp32 fields (a flat buffer
// of whole records keeps every record 16-aligned).
Nf4Tensor nf4_record_view(const at::Tensor& record, std::vector<int64_t> shape);

}  // namespace agenttune::quant
