#include "input_files.h"

#include <glob.h>

#include <algorithm>
#include <set>

#include "agenttune/util/error.h"
#include "agenttune/util/log.h"

namespace agenttune::data {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// The extension that tells the format, looking through a compression suffix.
std::string content_extension(const fs::path& p) {
  std::string ext = lower(p.extension().string());
  if (ext == ".gz" || ext == ".zst" || ext == ".zstd") ext = lower(p.stem().extension().string());
  return ext;
}

bool known_extension(const fs::path& p) {
  // Text and source code (a folder of code is a code corpus: one document per file).
  static const std::set<std::string> known = {
      ".jsonl", ".ndjson", ".json", ".txt", ".text", ".md", ".rst", ".py", ".c", ".cc", ".cpp", ".cxx",
      ".h", ".hh", ".hpp", ".cu", ".cuh", ".rs", ".go", ".js", ".ts", ".java", ".kt", ".scala", ".rb",
      ".php", ".swift", ".sh", ".sql", ".lua", ".r", ".jl", ".cs", ".m", ".hs", ".ml", ".ipynb"};
  return known.count(content_extension(p)) > 0;
}

bool is_glob(const std::string& s) { return s.find_first_of("*?[") != std::string::npos; }

void add_folder(const fs::path& dir, std::vector<fs::path>& out) {
  std::vector<fs::path> found;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::follow_directory_symlink);
       it != fs::recursive_directory_iterator(); ++it) {
    const std::string name = it->path().filename().string();
    if (!name.empty() && name[0] == '.') {
      if (it->is_directory()) it.disable_recursion_pending();
      continue;
    }
    if (it->is_regular_file() && known_extension(it->path())) found.push_back(it->path());
  }
  std::sort(found.begin(), found.end());
  out.insert(out.end(), found.begin(), found.end());
}

}  // namespace

InputFormat input_format(const fs::path& path) {
  const std::string ext = content_extension(path);
  return ext == ".jsonl" || ext == ".ndjson" || ext == ".json" ? InputFormat::Jsonl : InputFormat::Text;
}

std::vector<InputFile> expand_inputs(const std::vector<std::string>& inputs) {
  if (inputs.empty()) fail("prepare: no inputs given");
  std::vector<fs::path> paths;
  for (const auto& in : inputs) {
    const size_t before = paths.size();
    if (fs::is_directory(in)) {
      add_folder(in, paths);
    } else if (fs::exists(in)) {
      paths.emplace_back(in);
    } else if (is_glob(in)) {
      glob_t g{};
      int rc = ::glob(in.c_str(), 0, nullptr, &g);  // glob(3) sorts its matches
      for (size_t i = 0; rc == 0 && i < g.gl_pathc; ++i) {
        fs::path p = g.gl_pathv[i];
        if (fs::is_directory(p)) add_folder(p, paths);
        else if (fs::is_regular_file(p)) paths.push_back(p);
      }
      globfree(&g);
    } else {
      fail("{}: not found", in);
    }
    if (paths.size() == before) fail("{}: no input files found there", in);
  }
  std::vector<InputFile> out;
  std::set<fs::path> seen;
  for (auto& p : paths) {
    fs::path key = fs::weakly_canonical(p);
    if (!seen.insert(key).second) {
      log::warn("prepare: {} is named more than once; reading it once", p.string());
      continue;
    }
    InputFile f;
    f.path = p.lexically_normal();
    f.format = input_format(p);
    f.bytes = fs::file_size(p);
    f.mtime_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                     fs::last_write_time(p).time_since_epoch()).count();
    out.push_back(std::move(f));
  }
  return out;
}

}  // namespace agenttune::data
