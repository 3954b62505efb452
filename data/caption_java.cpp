// METEOR 1.5 and SPICE 1.0 through the official Java jars (data.md 6.9); they are not reimplemented.
// METEOR runs as one long-lived child (`java -jar -Xmx2G meteor-1.5.jar - - -stdio -l en -norm`) spoken
// to line by line: one SCORE line per image returns its statistics, then one EVAL line with all of them
// returns the per-image scores and the corpus score. SPICE runs once over a JSON file of all images.
//
// The child is started with fork/exec (no shell) in the jar's folder, as pycocoevalcap does (METEOR
// finds its paraphrase table there). Its stdin/stdout are one Unix socket pair, so writes to a dead
// child fail with EPIPE instead of raising SIGPIPE; its stderr goes to a temporary file whose tail is
// quoted in errors. Every read waits with poll() and a time limit, so a stuck child cannot hang us.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "data/json_util.h"
#include "data/metrics.h"
#include "runtime/error.h"

namespace vlp::data {

namespace {

namespace fs = std::filesystem;
using detail::json;

// Seconds to wait for one line from METEOR (JVM start and the paraphrase table take ~10-30 s; an EVAL
// over 5,000 images a few more) and for a whole SPICE run (parsing 25,000 references takes long).
constexpr int kMeteorLineTimeoutS = 600;
constexpr int kSpiceTimeoutS = 4 * 3600;

bool is_executable(const std::string& path) {
  std::error_code ec;
  return !path.empty() && ::access(path.c_str(), X_OK) == 0 && !fs::is_directory(path, ec);
}
bool is_file(const std::string& path) {
  std::error_code ec;
  return fs::is_regular_file(path, ec);
}

std::string find_on_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  if (!path) return {};
  std::stringstream ss(path);
  std::string dir;
  while (std::getline(ss, dir, ':')) {
    if (dir.empty()) continue;
    std::string candidate = dir + "/" + name;
    if (is_executable(candidate)) return candidate;
  }
  return {};
}

std::string tail_of_file(const std::string& path, size_t max_chars = 2000) {
  std::ifstream in(path, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (text.size() > max_chars) text = "..." + text.substr(text.size() - max_chars);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  return text;
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "was killed by signal " + std::to_string(WTERMSIG(status));
  return "stopped (status " + std::to_string(status) + ")";
}

// A temporary folder removed when this goes out of scope.
struct TempDir {
  std::string path;
  TempDir() {
    std::string base = std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp";
    std::string templ = base + "/vlp_java_metric_XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    VLP_CHECK(::mkdtemp(buf.data()) != nullptr, "caption metrics: cannot create a temporary folder under ", base, ": ",
              std::strerror(errno));
    path = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

// A child `java -jar JAR args...` run in the jar's folder, stdin/stdout on a socket, stderr to a file.
struct JavaChild {
  std::string jar;       // for messages
  std::string err_path;  // the child's stderr
  pid_t pid = -1;
  int fd = -1;           // our end: write = child's stdin, read = child's stdout
  std::string buffer;    // bytes read but not yet returned as lines
  bool reaped = false;
  int status = 0;

  JavaChild(const std::string& java, const std::string& jar_path, const std::vector<std::string>& java_opts,
            const std::vector<std::string>& args, const std::string& stderr_path)
      : jar(jar_path), err_path(stderr_path) {
    VLP_CHECK(is_executable(java), "caption metrics: java executable '", java, "' not found or not executable");
    VLP_CHECK(is_file(jar_path), "caption metrics: jar '", jar_path, "' not found");
    const std::string abs_jar = fs::absolute(jar_path).string();
    const std::string work_dir = fs::path(abs_jar).parent_path().string();
    std::vector<std::string> argv_s{java};
    argv_s.insert(argv_s.end(), java_opts.begin(), java_opts.end());
    argv_s.push_back("-jar");
    argv_s.push_back(abs_jar);
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);

    int sv[2];
    VLP_CHECK(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "caption metrics: socketpair failed: ",
              std::strerror(errno));
    int err_fd = ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (err_fd < 0) {
      ::close(sv[0]);
      ::close(sv[1]);
      VLP_FAIL("caption metrics: cannot create ", err_path, ": ", std::strerror(errno));
    }
    pid = ::fork();
    if (pid == 0) {
      // Child: only async-signal-safe calls until exec.
      ::dup2(sv[1], 0);
      ::dup2(sv[1], 1);
      ::dup2(err_fd, 2);
      if (::chdir(work_dir.c_str()) != 0) ::_exit(126);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    const int fork_errno = errno;
    ::close(sv[1]);
    ::close(err_fd);
    if (pid < 0) {
      ::close(sv[0]);
      VLP_FAIL("caption metrics: fork failed for ", jar, ": ", std::strerror(fork_errno));
    }
    fd = sv[0];
  }

  ~JavaChild() {
    if (fd >= 0) ::close(fd);
    if (pid > 0 && !reaped) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
  }

  // Error text: what went wrong, the child's state and the tail of its stderr.
  [[noreturn]] void fail(const std::string& what) {
    std::string state;
    if (!reaped) {
      // Give a dying child a moment so its exit status and last words are known.
      for (int i = 0; i < 20 && !reaped; ++i) {
        if (::waitpid(pid, &status, WNOHANG) == pid) reaped = true;
        else std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    state = reaped ? "; java " + describe_status(status) : "; java still running (killed)";
    if (reaped && WIFEXITED(status) && WEXITSTATUS(status) == 127) state += " (exec of java failed)";
    if (reaped && WIFEXITED(status) && WEXITSTATUS(status) == 126) state += " (cannot enter the jar's folder)";
    std::string err = tail_of_file(err_path);
    VLP_FAIL("caption metrics: ", jar, ": ", what, state, err.empty() ? std::string() : "; its stderr:\n" + err);
  }

  void write_line(const std::string& line) {
    std::string data = line + "\n";
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = ::send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail(std::string("writing to java failed (") + std::strerror(errno) + ")");
      done += size_t(n);
    }
  }

  std::string read_line(int timeout_s) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    for (;;) {
      size_t nl = buffer.find('\n');
      if (nl != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return line;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
      if (left.count() <= 0) fail("no answer within " + std::to_string(timeout_s) + " s");
      pollfd p{fd, POLLIN, 0};
      int r = ::poll(&p, 1, int(std::min<int64_t>(left.count(), 1000)));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) fail(std::string("poll failed (") + std::strerror(errno) + ")");
      if (r == 0) {
        if (::waitpid(pid, &status, WNOHANG) == pid) {
          reaped = true;
          fail("java ended before answering");
        }
        continue;
      }
      char chunk[65536];
      ssize_t n = ::recv(fd, chunk, sizeof(chunk), 0);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) fail(std::string("reading from java failed (") + std::strerror(errno) + ")");
      if (n == 0) fail("java closed its output before answering");
      buffer.append(chunk, size_t(n));
    }
  }

  // Closes stdin and waits (up to timeout_s) for the exit; returns the wait status.
  int finish(int timeout_s) {
    ::shutdown(fd, SHUT_WR);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
    while (!reaped) {
      pid_t r = ::waitpid(pid, &status, WNOHANG);
      if (r == pid) {
        reaped = true;
        break;
      }
      if (std::chrono::steady_clock::now() > deadline) fail("did not exit within " + std::to_string(timeout_s) + " s");
      // Drain stdout so a chatty child cannot block on a full socket.
      char chunk[4096];
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) > 0) (void)::recv(fd, chunk, sizeof(chunk), 0);
    }
    return status;
  }
};

double parse_number(JavaChild& child, const std::string& line, const char* what) {
  const char* begin = line.c_str();
  while (*begin == ' ' || *begin == '\t') ++begin;
  char* end = nullptr;
  errno = 0;
  double v = std::strtod(begin, &end);
  while (end && (*end == ' ' || *end == '\t')) ++end;
  if (end == begin || !end || *end != '\0') child.fail(std::string("expected ") + what + ", got '" + line + "'");
  return v;
}

// pycocoevalcap's hypothesis cleaning: drop "|||" (the field separator), then "  " -> " " once.
std::string clean_field(std::string s, bool hypothesis) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';  // one line per request (tokenised captions have none)
  if (!hypothesis) return s;
  std::string out;
  for (size_t i = 0; i < s.size();) {
    if (s.compare(i, 3, "|||") == 0) i += 3;
    else out += s[i++];
  }
  std::string collapsed;  // Python's str.replace('  ', ' '): non-overlapping, left to right
  for (size_t i = 0; i < out.size();) {
    if (out.compare(i, 2, "  ") == 0) {
      collapsed += ' ';
      i += 2;
    } else {
      collapsed += out[i++];
    }
  }
  return collapsed;
}

void check_nonempty(const std::vector<CaptionItem>& items, const char* metric) {
  VLP_CHECK(!items.empty(), metric, ": no images to score");
  for (size_t i = 0; i < items.size(); ++i)
    VLP_CHECK(!items[i].references.empty(), metric, ": image ", i, " has no reference captions");
}

}  // namespace

JavaMetricsConfig java_metrics_from_env() {
  JavaMetricsConfig c;
  if (const char* j = std::getenv("VLP_JAVA"); j && *j) {
    if (is_executable(j)) c.java = j;
    else c.missing_java = std::string("VLP_JAVA='") + j + "' is not an executable";
  } else {
    c.java = find_on_path("java");
    if (c.java.empty()) c.missing_java = "java not found on PATH (set VLP_JAVA)";
  }
  if (const char* m = std::getenv("VLP_METEOR_JAR")) c.meteor_jar = m;
  if (const char* s = std::getenv("VLP_SPICE_JAR")) c.spice_jar = s;
  if (const char* d = std::getenv("VLP_SPICE_CACHE")) c.spice_cache = d;
  return c;
}

JavaMetricResult meteor_score(const std::vector<CaptionItem>& items, const std::string& java, const std::string& jar) {
  check_nonempty(items, "METEOR");
  TempDir tmp;
  JavaChild child(java, jar, {"-Xmx2G"}, {"-", "-", "-stdio", "-l", "en", "-norm"}, tmp.path + "/stderr.txt");
  std::string eval_line = "EVAL";
  for (const auto& item : items) {
    std::string line = "SCORE";
    for (const auto& r : item.references) line += " ||| " + clean_field(r, false);
    line += " ||| " + clean_field(item.candidate, true);
    child.write_line(line);
    eval_line += " ||| " + child.read_line(kMeteorLineTimeoutS);
  }
  child.write_line(eval_line);
  JavaMetricResult result;
  for (size_t i = 0; i < items.size(); ++i)
    result.per_image.push_back(parse_number(child, child.read_line(kMeteorLineTimeoutS), "a per-image METEOR score"));
  result.corpus = parse_number(child, child.read_line(kMeteorLineTimeoutS), "the corpus METEOR score");
  child.finish(30);
  return result;
}

JavaMetricResult spice_score(const std::vector<CaptionItem>& items, const std::string& java, const std::string& jar,
                             const std::string& cache_dir) {
  check_nonempty(items, "SPICE");
  // The jar's manifest loads CoreNLP from lib/ beside it; without it the jar dies on its first class.
  for (const char* name : {"stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"}) {
    fs::path dep = fs::absolute(jar).parent_path() / "lib" / name;
    VLP_CHECK(!is_file(jar) || is_file(dep.string()), "SPICE: ", jar,
              " needs Stanford CoreNLP 3.6.0 beside it, but ", dep.string(),
              " is missing (pycocoevalcap's spice/get_stanford_models.py downloads it)");
  }
  TempDir tmp;
  std::string cache = cache_dir;
  if (cache.empty()) cache = (std::getenv("TMPDIR") ? std::string(std::getenv("TMPDIR")) : std::string("/tmp")) + "/vlp_spice_cache";
  std::error_code ec;
  fs::create_directories(cache, ec);
  VLP_CHECK(!ec, "SPICE: cannot create the cache folder ", cache, ": ", ec.message());
  cache = fs::absolute(cache).string();

  json input = json::array();
  for (size_t i = 0; i < items.size(); ++i)
    input.push_back({{"image_id", int64_t(i)}, {"test", items[i].candidate}, {"refs", items[i].references}});
  const std::string in_path = tmp.path + "/in.json", out_path = tmp.path + "/out.json";
  {
    std::ofstream f(in_path);
    f << input.dump();
    VLP_CHECK(f.good(), "SPICE: cannot write ", in_path);
  }
  JavaChild child(java, jar, {"-Xmx8G"}, {in_path, "-cache", cache, "-out", out_path, "-subset", "-silent"},
                  tmp.path + "/stderr.txt");
  int status = child.finish(kSpiceTimeoutS);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) child.fail("SPICE failed");
  if (!is_file(out_path)) child.fail("SPICE wrote no " + out_path);
  json out;
  try {
    out = detail::read_json_file(out_path, "SPICE output");
  } catch (const std::exception& e) {
    child.fail(e.what());
  }
  if (!out.is_array() || out.size() != items.size())
    child.fail("expected " + std::to_string(items.size()) + " results in " + out_path);
  JavaMetricResult result;
  result.per_image.assign(items.size(), std::nan(""));
  for (const auto& r : out) {
    const int64_t id = r.value("image_id", int64_t(-1));
    if (id < 0 || id >= int64_t(items.size())) child.fail("result with unexpected image_id in " + out_path);
    // pycocoevalcap's float_convert: anything that is not a number (e.g. "NaN") counts as NaN.
    double f = std::nan("");
    if (r.contains("scores") && r["scores"].contains("All") && r["scores"]["All"].contains("f") &&
        r["scores"]["All"]["f"].is_number())
      f = r["scores"]["All"]["f"].get<double>();
    result.per_image[size_t(id)] = f;
  }
  double sum = 0;
  for (double f : result.per_image) sum += f;
  result.corpus = sum / double(items.size());
  return result;
}

void add_java_caption_metrics(CaptionScores& scores, const std::vector<CaptionItem>& items, const JavaMetricsConfig& java) {
  auto run = [&](const std::string& jar, const char* env_name, const char* metric, auto&& compute,
                 std::optional<double>& value, std::vector<double>& per_image, std::string& reason) {
    value.reset();
    per_image.clear();
    if (jar.empty()) {
      reason = std::string(env_name) + " not set";
      return;
    }
    if (java.java.empty()) {
      reason = java.missing_java.empty() ? "java not found" : java.missing_java;
      return;
    }
    if (!is_file(jar)) {
      reason = std::string(metric) + " jar '" + jar + "' (" + env_name + ") not found";
      return;
    }
    try {
      JavaMetricResult r = compute();
      value = r.corpus;
      per_image = std::move(r.per_image);
      reason.clear();
    } catch (const std::exception& e) {
      reason = e.what();
    }
  };
  run(java.meteor_jar, "VLP_METEOR_JAR", "METEOR", [&] { return meteor_score(items, java.java, java.meteor_jar); },
      scores.meteor, scores.meteor_per_image, scores.meteor_not_computed);
  run(java.spice_jar, "VLP_SPICE_JAR", "SPICE",
      [&] { return spice_score(items, java.java, java.spice_jar, java.spice_cache); }, scores.spice,
      scores.spice_per_image, scores.spice_not_computed);
}

}  // namespace vlp::data
