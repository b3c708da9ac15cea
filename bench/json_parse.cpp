// nlohmann/json against simdjson on the hot path of `prepare`: one JSONL record -> its "text"
// field. Prints MB/s for each on a generated code-heavy JSONL; prepare uses the faster.
//   bench_json_parse [MB]   (default 64)
#include <simdjson.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_corpus.h"

namespace {

template <typename F>
double mb_per_s(const std::string& buf, const std::vector<size_t>& starts, F&& extract, size_t& chars) {
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    chars = 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t i = 0; i + 1 < starts.size(); ++i)
      chars += extract(std::string_view(buf.data() + starts[i], starts[i + 1] - starts[i] - 1));
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, starts.back() / 1e6 / s);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  const double mb = argc > 1 ? std::atof(argv[1]) : 64;
  std::string buf;
  std::vector<size_t> starts{0};
  for (uint64_t id = 0; buf.size() < mb * 1e6; ++id) {
    buf += nlohmann::json{{"id", id}, {"repo", "bench/x"}, {"text", agenttune::bench::make_document(id)}}.dump();
    buf += '\n';
    starts.push_back(buf.size());
  }
  buf.append(simdjson::SIMDJSON_PADDING, ' ');
  std::printf("JSONL: %.1f MB, %zu records, %.1f KB/record\n", starts.back() / 1e6, starts.size() - 1,
              starts.back() / 1e3 / (starts.size() - 1));

  size_t c1 = 0, c2 = 0, c3 = 0;
  const double nl = mb_per_s(buf, starts, [](std::string_view line) {
    return nlohmann::json::parse(line).at("text").get_ref<const std::string&>().size();
  }, c1);
  simdjson::dom::parser dom;
  const double sd = mb_per_s(buf, starts, [&](std::string_view line) {
    std::string_view t = dom.parse(line.data(), line.size(), false)["text"].get_string().value();
    return t.size();
  }, c2);
  simdjson::ondemand::parser od;
  const double so = mb_per_s(buf, starts, [&](std::string_view line) {
    auto doc = od.iterate(simdjson::padded_string_view(line.data(), line.size(), line.size() + simdjson::SIMDJSON_PADDING));
    std::string_view t = doc["text"].get_string().value();
    return t.size();
  }, c3);
  if (c1 != c2 || c1 != c3) {
    std::printf("MISMATCH: extracted %zu / %zu / %zu characters\n", c1, c2, c3);
    return 1;
  }
  std::printf("%-34s %9.0f MB/s\n", "nlohmann/json parse + at(text)", nl);
  std::printf("%-34s %9.0f MB/s  (%.1fx)  <- prepare uses this\n", "simdjson DOM (full validation)", sd, sd / nl);
  std::printf("%-34s %9.0f MB/s  (%.1fx)  (skips validating the rest)\n", "simdjson On-Demand", so, so / nl);
  return 0;
}
