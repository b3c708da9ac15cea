#include <gtest/gtest.h>
#include <pty.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "agenttune/train/metrics.h"
#include "agenttune/util/error.h"
#include "agenttune/util/files.h"
#include "test_paths.h"

namespace agenttune {
namespace {

using namespace agenttune::testing;
namespace fs = std::filesystem;
using nlohmann::json;

std::vector<json> read_jsonl(const fs::path& p) {
  std::istringstream in(read_text_file(p));
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

TEST(Metrics, Crc32cKnownVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  std::string zeros(32, '\0'), ones(32, '\xff'), inc(32, '\0');
  for (int i = 0; i < 32; ++i) inc[i] = static_cast<char>(i);
  // RFC 3720 (iSCSI) appendix B.4.
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  EXPECT_EQ(crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c("6789", 4, crc32c("12345", 5)), 0xE3069283u);  // continuation
  // Masked values as TensorBoard's own reader computes them.
  EXPECT_EQ(masked_crc32c("123456789", 9), 0xC78AB0E5u);
  EXPECT_EQ(masked_crc32c("", 0), 0xA282EAD8u);
}

TEST(TensorBoard, PythonOracleReadsBackScalars) {
  auto dir = scratch_dir() / "tb";
  struct Point { std::string tag; int64_t step; double value; };
  std::vector<Point> points;
  for (int64_t s = 0; s < 5; ++s) {
    points.push_back({"train/loss", s * 10, 10.0 / (s + 1.0) - 0.123});
    points.push_back({"lr", s * 10, 3e-4 * s});
  }
  points.push_back({"neg/big", 1234567890123, -6.5e12});
  fs::path file;
  {
    TensorBoardWriter w(dir);
    file = w.path();
    for (const auto& p : points) w.add_scalar(p.tag, p.value, p.step);
  }
  EXPECT_TRUE(file.filename().string().starts_with("events.out.tfevents."));
  double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();

  std::string out;
  int rc = run_command(venv_python().string() + " " +
                           (source_dir() / "tests/train/py/read_tfevents.py").string() + " " +
                           dir.string(),
                       &out);
  ASSERT_EQ(rc, 0) << out;
  json j = json::parse(out);
  EXPECT_EQ(j["files"], 1);
  EXPECT_EQ(j["file_versions"], json::array({"brain.Event:2"}));
  ASSERT_EQ(j["strict"].size(), points.size());
  for (size_t i = 0; i < points.size(); ++i) {
    const auto& s = j["strict"][i];
    EXPECT_EQ(s["tag"], points[i].tag) << i;
    EXPECT_EQ(s["step"].get<int64_t>(), points[i].step) << i;
    EXPECT_EQ(s["value"].get<double>(), static_cast<double>(static_cast<float>(points[i].value))) << i;
    EXPECT_NEAR(s["wall_time"].get<double>(), now, 60.0);
  }
  const auto& acc = j["accumulator"];
  ASSERT_EQ(acc.size(), 3u);
  ASSERT_EQ(acc["train/loss"].size(), 5u);
  EXPECT_EQ(acc["train/loss"][3][0], 30);
  EXPECT_EQ(acc["train/loss"][3][1].get<double>(), static_cast<double>(static_cast<float>(2.5 - 0.123)));
  EXPECT_EQ(acc["lr"][4][1].get<double>(), static_cast<double>(static_cast<float>(1.2e-3)));
  EXPECT_EQ(acc["neg/big"][0][0].get<int64_t>(), 1234567890123);
}

TEST(Metrics, JsonlLinesParseInOrder) {
  auto dir = scratch_dir();
  {
    MetricsLogger m(dir, true);
    for (int64_t s = 1; s <= 3; ++s) m.log(s, {{"loss", 4.0 - s * 0.5}, {"lr", 1e-4 * s}});
    m.log(4, {{"loss", std::nan("")}, {"grad_norm", INFINITY}});
  }
  auto lines = read_jsonl(dir / "metrics.jsonl");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[1]["step"], 2);
  EXPECT_DOUBLE_EQ(lines[1]["loss"].get<double>(), 3.0);
  EXPECT_DOUBLE_EQ(lines[2]["lr"].get<double>(), 3e-4);
  EXPECT_TRUE(lines[3]["loss"].is_null());
  EXPECT_TRUE(lines[3]["grad_norm"].is_null());
  // "step" leads, then the caller's order.
  std::string first = read_text_file(dir / "metrics.jsonl").substr(0, 22);
  EXPECT_EQ(first, R"({"step":1,"loss":3.5,")");
  int tb_files = 0;
  for (const auto& e : fs::directory_iterator(dir / "tb")) tb_files += fs::file_size(e.path()) > 0;
  EXPECT_EQ(tb_files, 1);
}

TEST(Metrics, ResumeAppendsAndNeverTruncates) {
  auto dir = scratch_dir();
  {
    MetricsLogger m(dir, false);
    for (int64_t s = 1; s <= 5; ++s) m.log(s, {{"loss", 1.0 * s}});
  }
  {
    std::ofstream torn(dir / "metrics.jsonl", std::ios::app);
    torn << R"({"step":6,"lo)";  // killed mid-write
  }
  {
    MetricsLogger m(dir, false);  // resumed from the step-3 checkpoint
    m.log(4, {{"loss", 40.0}});
  }
  auto lines = read_jsonl(dir / "metrics.jsonl");
  // The first run's five rows survive; the torn fragment is gone; the resumed row follows them.
  ASSERT_EQ(lines.size(), 6u);
  for (int64_t s = 1; s <= 5; ++s) EXPECT_EQ(lines[s - 1]["step"], s);
  EXPECT_EQ(lines[5]["step"], 4);
  EXPECT_DOUBLE_EQ(lines[5]["loss"].get<double>(), 40.0);
  EXPECT_FALSE(fs::exists(dir / "tb"));
  const auto size = fs::file_size(dir / "metrics.jsonl");
  { MetricsLogger again(dir, false); }  // a fresh start truncates nothing either
  EXPECT_EQ(fs::file_size(dir / "metrics.jsonl"), size);
}

TEST(Progress, FormatEta) {
  EXPECT_EQ(ProgressLine::format_eta(0), "0s");
  EXPECT_EQ(ProgressLine::format_eta(12.4), "12s");
  EXPECT_EQ(ProgressLine::format_eta(59.6), "1m00s");
  EXPECT_EQ(ProgressLine::format_eta(245), "4m05s");
  EXPECT_EQ(ProgressLine::format_eta(3720), "1h02m");
  EXPECT_EQ(ProgressLine::format_eta(86399), "23h59m");
  EXPECT_EQ(ProgressLine::format_eta(97200), "1d03h");
  EXPECT_EQ(ProgressLine::format_eta(-1), "?");
  EXPECT_EQ(ProgressLine::format_eta(std::nan("")), "?");
  EXPECT_EQ(ProgressLine::format_eta(INFINITY), "?");
}

TEST(Progress, FormatLine) {
  EXPECT_EQ(ProgressLine::format_line(120, 1000, 2.3456, 3e-4, 12345, 0.412, 3720),
            "step 120/1000 | loss 2.3456 | lr 3.00e-04 | 12.3k tok/s | MFU 41.2% | ETA 1h02m");
  EXPECT_EQ(ProgressLine::format_line(1, 2, 10, 1e-5, 2.5e6, -1, -1),
            "step 1/2 | loss 10.0000 | lr 1.00e-05 | 2.50M tok/s | ETA ?");
  EXPECT_EQ(ProgressLine::format_line(7, 9, 0.5, 0, 950, 0, 5),
            "step 7/9 | loss 0.5000 | lr 0.00e+00 | 950 tok/s | MFU 0.0% | ETA 5s");
  // An evaluated step shows its validation loss beside the training loss (issue 22: it reached
  // only metrics.jsonl).
  EXPECT_EQ(ProgressLine::format_line(40, 120, 2.3456, 3e-4, 12345, -1, 60, 2.71828),
            "step 40/120 | loss 2.3456 | val_loss 2.7183 | lr 3.00e-04 | 12.3k tok/s | ETA 1m00s");
}

TEST(Progress, PlainFileGetsOneLinePerUpdate) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  ProgressLine p(10, 0, f);
  for (int s = 1; s <= 3; ++s) p.update(s, 2.0, 1e-4, 1000, 0.5);
  p.finish();
  std::rewind(f);
  std::string text;
  for (int c; (c = std::fgetc(f)) != EOF;) text.push_back(static_cast<char>(c));
  std::fclose(f);
  EXPECT_EQ(text.find('\r'), std::string::npos);
  std::istringstream in(text);
  std::vector<std::string> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 3u) << text;
  EXPECT_TRUE(lines[2].starts_with("step 3/10 | loss 2.0000 | lr 1.00e-04 | 1.0k tok/s | MFU 50.0% | ETA "))
      << lines[2];
  EXPECT_NE(lines[0].find("ETA 0s"), std::string::npos) << lines[0];  // 9 steps at microseconds each
}

// On a terminal the line is redrawn in place, but an evaluated step's line stays: it ends, and the
// next update draws below it. A pseudo-terminal makes the stream a tty.
TEST(Progress, TerminalKeepsTheEvaluatedStepsLine) {
  int master = -1, slave = -1;
  ASSERT_EQ(::openpty(&master, &slave, nullptr, nullptr, nullptr), 0);
  std::FILE* f = ::fdopen(slave, "w");
  ASSERT_NE(f, nullptr);
  {
    ProgressLine p(4, 0, f);
    p.update(1, 2.0, 1e-4, 1000, -1);
    p.update(2, 1.5, 1e-4, 1000, -1, 1.75);
    p.update(3, 1.25, 1e-4, 1000, -1);
    p.finish();
  }
  std::fclose(f);
  std::string text;
  char buf[4096];
  for (ssize_t n; (n = ::read(master, buf, sizeof buf)) > 0;) {
    text.append(buf, static_cast<size_t>(n));
    if (text.find("step 3/4") != std::string::npos && text.back() == '\n') break;
  }
  ::close(master);
  // The tty turns "\n" into "\r\n"; the redraws start with "\r".
  const size_t val = text.find("val_loss 1.7500");
  ASSERT_NE(val, std::string::npos) << text;
  const size_t step3 = text.find("step 3/4");
  ASSERT_NE(step3, std::string::npos) << text;
  EXPECT_NE(text.substr(val, step3 - val).find('\n'), std::string::npos) << "the evaluated line was redrawn over";
  EXPECT_EQ(text.substr(0, val).find('\n'), std::string::npos) << "step 1's line is redrawn, not kept";
}

// A run that starts on a full disk: the TensorBoard file's first record cannot be written. It used
// to be buffered by a std::ofstream whose failure surfaced at a later flush, reported with whatever
// errno another call had left ("Inappropriate ioctl for device", from the progress line's
// isatty()). Now the constructor's own write fails, with its own errno. The file-size limit 0 makes
// every write fail (EFBIG), in a child process so the test's own files are untouched.
[[noreturn]] void write_tensorboard_with_no_file_space(const fs::path& logdir) {
  std::signal(SIGXFSZ, SIG_IGN);
  rlimit limit{};
  ::getrlimit(RLIMIT_FSIZE, &limit);
  const rlim_t soft = limit.rlim_cur;
  limit.rlim_cur = 0;
  ::setrlimit(RLIMIT_FSIZE, &limit);
  std::string what = "no error";
  try {
    TensorBoardWriter w(logdir);
    errno = ENOTTY;
    w.flush();
  } catch (const Error& e) {
    what = e.what();
  }
  limit.rlim_cur = soft;  // gtest reads what the child prints from a file
  ::setrlimit(RLIMIT_FSIZE, &limit);
  std::fprintf(stderr, "%s\n", what.c_str());
  std::_Exit(0);
}

TEST(TensorBoardDeathTest, AWriteFailureAtStartCarriesItsOwnErrno) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const fs::path dir = scratch_dir();
  EXPECT_EXIT(write_tensorboard_with_no_file_space(dir / "tb"), ::testing::ExitedWithCode(0),
              "tb/events\\.out\\.tfevents\\.[^:]*: write failed: File too large");
}

// The same for metrics.jsonl, here on a real full device.
TEST(Metrics, AFullDiskIsReportedWithTheWritesOwnErrno) {
  auto dir = scratch_dir();
  fs::create_symlink("/dev/full", dir / "metrics.jsonl");
  MetricsLogger m(dir, false);
  errno = ENOTTY;
  try {
    m.log(1, {{"loss", 1.0}});
    FAIL() << "a row was written to /dev/full";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), (dir / "metrics.jsonl").string() + ": write failed: No space left on device");
  }
}

}  // namespace
}  // namespace agenttune
