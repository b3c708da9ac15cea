#include "bench_corpus.h"

#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

namespace agenttune::bench {

namespace {

std::string word(std::mt19937_64& rng) {
  static const char* syl[] = {"ka", "lo", "ren", "ti", "mar", "sen", "do", "vi", "qu", "el", "an", "tor",
                              "is", "ne", "pa", "ri", "un", "zo", "bel", "cha", "str", "ing", "er", "ov"};
  std::string w;
  for (int n = 1 + rng() % 3; n > 0; --n) w += syl[rng() % std::size(syl)];
  return w;
}

std::string ident(std::mt19937_64& rng) {
  std::string a = word(rng);
  switch (rng() % 3) {
    case 0: return a + "_" + word(rng);
    case 1: { std::string b = word(rng); b[0] = static_cast<char>(std::toupper(b[0])); return a + b; }
    default: return a;
  }
}

std::string code(std::mt19937_64& rng) {
  const std::string f = ident(rng), x = ident(rng), y = ident(rng), n = std::to_string(rng() % 1000);
  switch (rng() % 5) {
    case 0: return "def " + f + "(" + x + ", " + y + "=None):\n    if " + y + " is None:\n        " + y +
                   " = []\n    for i in range(" + n + "):\n        " + y + ".append(" + x + "[i] * 2)\n    return " + y + "\n\n";
    case 1: return "static int " + f + "(const std::vector<int>& " + x + ") {\n  int " + y + " = 0;\n  for (size_t i = 0; i < " +
                   x + ".size(); ++i) " + y + " += " + x + "[i] % " + n + ";\n  return " + y + ";\n}\n\n";
    case 2: return "export function " + f + "(" + x + ") {\n  const " + y + " = " + x + ".map((v) => v + " + n +
                   ");\n  return " + y + ".filter(Boolean);\n}\n\n";
    case 3: return "SELECT " + x + ", COUNT(*) AS " + y + " FROM " + f + " WHERE " + x + " > " + n + " GROUP BY " + x + ";\n";
    default: return "    # " + word(rng) + " " + word(rng) + ": " + ident(rng) + "\n    self." + x + " = " + y + "  # " + n + "\n";
  }
}

std::string prose(std::mt19937_64& rng) {
  std::string s;
  for (int k = 5 + rng() % 20; k > 0; --k) s += word(rng) + (rng() % 9 == 0 ? ", " : " ");
  if (rng() % 10 == 0) s += "(naïve café — 東京, ünïcode) ";
  s.back() = '.';
  return s + (rng() % 3 == 0 ? "\n\n" : " ");
}

}  // namespace

std::string make_document(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string d;
  for (int parts = 3 + rng() % 30; parts > 0; --parts) d += rng() % 10 < 7 ? code(rng) : prose(rng);
  return d;
}

std::vector<std::filesystem::path> write_corpus(const std::filesystem::path& dir, uint64_t bytes, int files) {
  std::filesystem::create_directories(dir);
  std::vector<std::filesystem::path> out;
  uint64_t written = 0, id = 0;
  for (int f = 0; f < files; ++f) {
    out.push_back(dir / ("part" + std::to_string(f) + ".jsonl"));
    std::ofstream o(out.back(), std::ios::binary);
    while (written < bytes * (f + 1) / files) {
      std::string line = nlohmann::json{{"id", id}, {"repo", "bench/" + std::to_string(id % 97)}, {"text", make_document(id)}}.dump() + "\n";
      ++id;
      written += line.size();
      o << line;
    }
  }
  return out;
}

}  // namespace agenttune::bench
