// NF4 against bitsandbytes' own bytes and values (tests/quant/py/bnb_nf4_oracle.py, bnb 0.50.2 on
// the CPU): the packed codes, the double-quantised absmax (codes, absmax2, offset) and the
// dequantised weights, for random and real-shaped weights, sizes that are not multiples of 64 and
// whole zero blocks.
#include <gtest/gtest.h>

#include <cstring>
#include <mutex>
#include <nlohmann/json.hpp>

#include "agenttune/io/safetensors.h"
#include "agenttune/quant/nf4.h"
#include "agenttune/util/files.h"
#include "test_paths.h"

namespace agenttune::quant {
namespace {

namespace fs = std::filesystem;

fs::path oracle_dir() {
  static std::once_flag once;
  static const fs::path root = testing::binary_dir() / "test-scratch" / "nf4_oracle";
  std::call_once(once, [] {
    // ctest makes the files once (oracle.make_nf4, a FIXTURES_SETUP test); a binary run by hand
    // makes them when they are missing or older than the script.
    const auto script = testing::source_dir() / "tests/quant/py/bnb_nf4_oracle.py";
    const auto stamp = root / "cases.json";
    if (fs::exists(stamp) && fs::last_write_time(stamp) >= fs::last_write_time(script)) return;
    const auto tmp = root.string() + ".tmp";
    fs::remove_all(tmp);
    std::string out;
    if (testing::run_command(testing::venv_python().string() + " " + script.string() + " " + tmp, &out) != 0)
      throw std::runtime_error("bnb_nf4_oracle.py failed:\n" + out);
    fs::remove_all(root);
    fs::rename(tmp, root);
  });
  return root;
}

std::vector<std::string> oracle_cases() {
  const auto j = nlohmann::json::parse(read_text_file(oracle_dir() / "cases.json"));
  std::vector<std::string> names;
  for (const auto& [name, v] : j.at("cases").items()) names.push_back(name);
  return names;
}

// Equal as bytes: same dtype, same shape, every bit (so -0.0 != 0.0 and NaN payloads count).
::testing::AssertionResult same_bits(const at::Tensor& ours, const at::Tensor& bnb) {
  if (ours.scalar_type() != bnb.scalar_type() || ours.sizes() != bnb.sizes())
    return ::testing::AssertionFailure() << "ours is " << ours.scalar_type() << " " << ours.sizes() << ", bnb's is "
                                         << bnb.scalar_type() << " " << bnb.sizes();
  const auto a = ours.contiguous().cpu();
  const auto b = bnb.contiguous();
  const auto* pa = static_cast<const uint8_t*>(a.data_ptr());
  const auto* pb = static_cast<const uint8_t*>(b.data_ptr());
  const size_t elem = a.element_size();
  for (int64_t i = 0; i < a.numel(); ++i)
    if (std::memcmp(pa + i * elem, pb + i * elem, elem) != 0)
      return ::testing::AssertionFailure() << "first difference at flat index " << i << " of " << a.numel() << ": ours "
                                           << a.view(-1)[i].item().toDouble() << ", bnb "
                                           << b.view(-1)[i].item().toDouble();
  return ::testing::AssertionSuccess();
}

struct Case {
  std::string name;
  SafetensorsFile file;
  at::Tensor get(const std::string& tensor) const { return file.any_tensor(tensor); }
};

std::vector<Case> load_cases() {
  std::vector<Case> cases;
  for (const auto& name : oracle_cases())
    cases.push_back({name, SafetensorsFile::open(oracle_dir() / (name + ".safetensors"))});
  return cases;
}

const Nf4Tables& cpu_tables() {
  static const Nf4Tables t = make_nf4_tables(at::kCPU);
  return t;
}

TEST(Nf4Oracle, LevelsAndDynamicMapAreBnbs) {
  const auto cases = load_cases();
  ASSERT_FALSE(cases.empty());
  const auto& c = cases.front();
  const auto& levels = nf4_levels();
  const auto& dyn = dynamic_map();
  EXPECT_TRUE(same_bits(at::tensor(at::ArrayRef<float>(levels.data(), levels.size())), c.get("nf4_code")));
  EXPECT_TRUE(same_bits(at::tensor(at::ArrayRef<float>(dyn.data(), dyn.size())), c.get("dynamic_code")));
}

TEST(Nf4Oracle, QuantisedBytesEqualBnbs) {
  for (const auto& c : load_cases()) {
    SCOPED_TRACE(c.name);
    const auto q = quantize_nf4(c.get("weight"), cpu_tables());
    EXPECT_EQ(q.shape, c.get("weight").sizes().vec());
    EXPECT_TRUE(same_bits(q.codes, c.get("codes")));
    EXPECT_TRUE(same_bits(q.absmax_codes, c.get("absmax_codes")));
    EXPECT_TRUE(same_bits(q.absmax2, c.get("absmax2")));
    EXPECT_TRUE(same_bits(q.offset, c.get("offset")));
  }
}

TEST(Nf4Oracle, DequantisedValuesEqualBnbs) {
  for (const auto& c : load_cases()) {
    SCOPED_TRACE(c.name);
    const auto w = c.get("weight");
    const auto q = quantize_nf4(w, cpu_tables());
    EXPECT_TRUE(same_bits(dequantize_nf4(q, w.scalar_type(), cpu_tables()), c.get("dequant")));
    // Quantisation error: at most half the widest NF4 gap (0.304 of a block's absmax) per value.
    const auto err = (dequantize_nf4(q, at::kFloat, cpu_tables()) - w.to(at::kFloat)).abs().max().item<double>();
    EXPECT_LT(err, 0.16 * w.to(at::kFloat).abs().max().item<double>());
  }
}

// bnb's CPU kernel picks a neighbouring absmax code now and then; its state is still an NF4 state,
// and ours reads it exactly as bnb does.
TEST(Nf4Oracle, DequantisesBnbsCpuKernelStateAsBnbDoes) {
  int64_t differing = 0;
  for (const auto& c : load_cases()) {
    SCOPED_TRACE(c.name);
    const auto w = c.get("weight");
    Nf4Tensor q;
    q.shape = w.sizes().vec();
    q.codes = c.get("codes");
    q.absmax_codes = c.get("cpu_absmax_codes");
    q.absmax2 = c.get("cpu_absmax2");
    q.offset = c.get("offset");
    differing += q.absmax_codes.ne(c.get("absmax_codes")).sum().item<int64_t>();
    EXPECT_TRUE(same_bits(dequantize_nf4(q, w.scalar_type(), cpu_tables()), c.get("cpu_dequant")));
  }
  EXPECT_GT(differing, 0) << "the CPU kernel's state equals the exact one everywhere: this test reads nothing new";
}

}  // namespace
}  // namespace agenttune::quant
