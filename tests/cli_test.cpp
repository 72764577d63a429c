// The `dgr` executable as a user meets it: help texts, config files, bad flags, missing and bad files.
// Every error is one line on stderr naming the file (and line), with a non-zero exit.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct Result {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

fs::path test_dir() {
  static fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("dgr_cli_test_" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

Result run_dgr_env(const std::string& env, const std::string& args) {
  fs::path err_file = test_dir() / "stderr.txt";
  std::string command = (env.empty() ? "" : "env " + env + " ") + std::string(DGR_BINARY) + " " + args + " 2>" +
                        err_file.string();
  Result r;
  std::FILE* pipe = ::popen(command.c_str(), "r");
  char buffer[4096];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0) r.out.append(buffer, n);
  int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  std::ifstream in(err_file);
  r.err.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return r;
}

Result run_dgr(const std::string& args) { return run_dgr_env("", args); }

std::string write_file(const std::string& name, const std::string& content) {
  fs::path path = test_dir() / name;
  std::ofstream(path, std::ios::binary) << content;
  return path.string();
}

int count_lines(const std::string& s) {
  int lines = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\n' && i > 0 && s[i - 1] != '\n') ++lines;
  }
  if (!s.empty() && s.back() != '\n') ++lines;
  return lines;
}

void expect_one_line_error(const Result& r, const std::string& must_contain, int exit_code) {
  EXPECT_EQ(r.exit_code, exit_code) << r.err;
  EXPECT_EQ(count_lines(r.err), 1) << r.err;
  EXPECT_NE(r.err.find(must_contain), std::string::npos) << "expected '" << must_contain << "' in: " << r.err;
}

TEST(Cli, TopLevelHelpListsEveryOptionWithDefault) {
  Result r = run_dgr("--help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* s : {"--config", "--log-dir", "--log-level", "--version", "data", "=info"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " missing from:\n" << r.out;
  }
}

TEST(Cli, EverySubcommandHelpListsOptionsWithDefaults) {
  struct Expect { std::string command; std::vector<std::string> present; };
  std::vector<Expect> cases = {
      {"data --help", {"build-debian", "check"}},
      {"data build-debian --help",
       {"--subset", "=tiny", "--out", "--lists-dir", "--force", "(default: off)", "--min-content-words", "=20",
        "--boilerplate-min-sources", "=5", "--near-duplicate-jaccard", "=0.7"}},
      {"data check --help", {"--data", "--corpus", "--queries", "--qrels", "--run"}},
  };
  for (const auto& c : cases) {
    Result r = run_dgr(c.command);
    EXPECT_EQ(r.exit_code, 0) << c.command;
    for (const auto& s : c.present) EXPECT_NE(r.out.find(s), std::string::npos) << s << " missing from " << c.command << ":\n" << r.out;
  }
}

TEST(Cli, VersionNamesEveryLibrary) {
  Result r = run_dgr("--version");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"dgr ", "(git ", "LibTorch ", "MPI ", "HDF5 1.", "NCCL ", "BLAS"}) {
    EXPECT_NE(r.out.find(s), std::string::npos) << s << " missing from:\n" << r.out;
  }
}

// Most of a CPU step is sgemm: the kernel set OpenBLAS runs is part of every benchmark figure.
TEST(Cli, VersionNamesTheBlasKernelsInUse) {
  Result r = run_dgr_env("OPENBLAS_CORETYPE=Haswell", "--version");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // Debian's LibTorch 1.13 runs on OpenBLAS; a LibTorch 2.x wheel (scripts/libtorch2-check.sh) brings its own.
  if (r.out.find("LibTorch 2.") != std::string::npos) GTEST_SKIP() << "LibTorch 2.x carries its own BLAS:\n" << r.out;
  EXPECT_NE(r.out.find("OpenBLAS 0."), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("kernels Haswell (OPENBLAS_CORETYPE=Haswell)"), std::string::npos) << r.out;
}

TEST(Cli, UnknownFlagIsAnError) {
  expect_one_line_error(run_dgr("data check --bogus 3"), "--bogus", 2);
}

TEST(Cli, MissingSubcommandIsAnError) {
  Result r = run_dgr("data");
  EXPECT_EQ(r.exit_code, 2);
}

TEST(Cli, UnknownConfigKeyNamesFileLineAndKey) {
  std::string config = write_file("bad_key.toml", "log-level = \"info\"\n[data.build-debian]\nsubsett = \"tiny\"\n");
  expect_one_line_error(run_dgr("--config " + config + " data check --data /nonexistent"),
                        config + ":3: unknown key 'data.build-debian.subsett'", 2);
}

TEST(Cli, EveryConfigProblemIsReportedTogether) {
  std::string config = write_file("bad_keys.toml",
                                  "bogus = 1\n[data.build-debian]\nsubset = \"huge\"\nmin-content-words = \"many\"\n"
                                  "[data.nothing]\nx = 1\n");
  Result r = run_dgr("--config " + config + " data check --data /nonexistent");
  EXPECT_EQ(r.exit_code, 2);
  for (const std::string& s : std::vector<std::string>{config + ":1: unknown key 'bogus'", config + ":3: key 'data.build-debian.subset'",
                              config + ":4: key 'data.build-debian.min-content-words'",
                              config + ":5: unknown table [data.nothing]", "4 problems"}) {
    EXPECT_NE(r.err.find(s), std::string::npos) << s << " missing from:\n" << r.err;
  }
}

TEST(Cli, ConfigSyntaxErrorNamesLine) {
  std::string config = write_file("syntax.toml", "a = 1\nb = = 2\n");
  expect_one_line_error(run_dgr("--config " + config + " data check --data x"), config + ":2:", 2);
}

TEST(Cli, MissingConfigFileIsAnError) {
  expect_one_line_error(run_dgr("--config /nonexistent/dgr.toml data check --data x"), "/nonexistent/dgr.toml", 2);
}

TEST(Cli, ConfigValuesApplyAndFlagsWin) {
  std::string good = write_file("good_corpus.tsv", "pid\ttitle\ttext\np1\tOne\tthe first passage\n");
  std::string other = write_file("other_corpus.tsv", "p1\tOne\tfirst\np2\tTwo\tsecond\n");
  std::string config = write_file("good.toml", "[data.check]\ncorpus = \"" + good + "\"\n");
  Result from_config = run_dgr("--config " + config + " data check");
  EXPECT_EQ(from_config.exit_code, 0) << from_config.err;
  EXPECT_NE(from_config.out.find(good + ": 1 passages"), std::string::npos) << from_config.out;
  Result flag_wins = run_dgr("--config " + config + " data check --corpus " + other);
  EXPECT_EQ(flag_wins.exit_code, 0) << flag_wins.err;
  EXPECT_NE(flag_wins.out.find(other + ": 2 passages"), std::string::npos) << flag_wins.out;
}

TEST(Cli, MissingInputFileIsAnError) {
  expect_one_line_error(run_dgr("data check --corpus /nonexistent/corpus.tsv"), "/nonexistent/corpus.tsv: cannot open", 1);
}

TEST(Cli, BadInputsGiveOneLineErrorWithFileAndLine) {
  std::string corpus = write_file("corpus.tsv", "pid\ttitle\ttext\np1\tOne\tfirst text\np2\tTwo\tsecond text\n");
  std::string queries = write_file("queries.tsv", "qid\ttext\nq1\tfirst query\nq2\tsecond query\n");
  struct Case { std::string name, flag, content, expect; };
  std::vector<Case> cases = {
      {"dup_corpus.tsv", "--corpus", "p1\tA\ttext a\np2\tB\ttext b\np1\tC\ttext c\n", ":3:"},
      {"malformed_corpus.tsv", "--corpus", "p1\tA\ttext a\np2 only one field\n", ":2:"},
      {"latin1_corpus.tsv", "--corpus", "p1\tA\tcaf\xE9\n", ":1:"},
      {"empty_queries.tsv", "--queries", "", "empty"},
      {"dup_queries.tsv", "--queries", "q1\tone\nq1\tagain\n", ":2:"},
      {"unknown_pid_qrels.tsv", "--qrels", "q1\tp77\n", ":1:"},
      {"unknown_qid_qrels.trec", "--qrels", "q1 0 p1 1\nq9 0 p2 1\n", ":2:"},
      {"nan_run.trec", "--run", "q1 Q0 p1 1 nan dgr\n", ":1:"},
      {"inf_run.trec", "--run", "q1 Q0 p1 1 2.0 dgr\nq1 Q0 p2 2 -inf dgr\n", ":2:"},
      {"contradicting_run.trec", "--run", "q1 Q0 p1 1 1.0 dgr\nq1 Q0 p2 2 2.5 dgr\n", ":2"},
      {"unknown_pid_run.trec", "--run", "q1 Q0 p1 1 2.0 dgr\nq2 Q0 p99 1 1.0 dgr\n", ":2:"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    std::string path = write_file(c.name, c.content);
    std::string args = "data check --corpus " + corpus + " --queries " + queries + " " + c.flag + " " + path;
    if (c.flag == "--corpus") args = "data check --corpus " + path;
    if (c.flag == "--queries") args = "data check --queries " + path;
    Result r = run_dgr(args);
    expect_one_line_error(r, path + (c.expect == "empty" ? ":" : c.expect), 1);
    if (c.expect == "empty") {
      EXPECT_NE(r.err.find("empty"), std::string::npos) << r.err;
    }
  }
}

TEST(Cli, BuildWithoutListsFailsCleanlyAndLeavesNothing) {
  fs::path out = test_dir() / "no_lists_out";
  Result r = run_dgr("data build-debian --lists-dir /nonexistent/lists --out " + out.string());
  expect_one_line_error(r, "/nonexistent/lists", 1);
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace

namespace {

TEST(Cli, WorldSizeThatDiffersFromSlurmNtasksIsAStartupError) {
  std::string corpus = write_file("ntasks_corpus.tsv", "p1\tOne\tfirst\n");
  Result r = run_dgr_env("SLURM_NTASKS=3", "data check --corpus " + corpus);
  expect_one_line_error(r, "MPI world size is 1 but SLURM_NTASKS=3", 2);
  Result ok = run_dgr_env("SLURM_NTASKS=1", "data check --corpus " + corpus);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

// torchrun-style variables: 4 copies started without MPI would each be a singleton writing the same OUT.
TEST(Cli, TorchrunVariablesWithoutAnMpiLaunchAreAStartupError) {
  std::string corpus = write_file("torchrun_corpus.tsv", "p1\tOne\tfirst\n");
  Result r = run_dgr_env("WORLD_SIZE=4 RANK=2 LOCAL_RANK=2", "data check --corpus " + corpus);
  expect_one_line_error(r, "MPI world size is 1 but WORLD_SIZE=4", 2);
  EXPECT_NE(r.err.find("mpirun -n N"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("MPI rank is 0 but RANK=2"), std::string::npos) << r.err;
  Result ok = run_dgr_env("WORLD_SIZE=1 RANK=0 LOCAL_RANK=0", "data check --corpus " + corpus);
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
}

}  // namespace

namespace {

TEST(Cli, EvaluatePrintsTheMetricsOfARun) {
  std::string qrels = write_file("eval_qrels.tsv", "qid\tpid\nq1\tb\nq2\tz\n");
  std::string run = write_file("eval_run.trec", "q1 Q0 a 1 2.0 t\nq1 Q0 b 2 1.0 t\nq2 Q0 z 1 3.0 t\n");
  Result r = run_dgr("evaluate --run " + run + " --qrels " + qrels);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  // q1: relevant at rank 2 (RR 0.5), q2: rank 1 (RR 1): MRR 0.75, R@1 0.5.
  EXPECT_NE(r.out.find("R@1 0.5000"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("MRR@10 0.7500"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(queries 2)"), std::string::npos) << r.out;
}

TEST(Cli, EvaluateWritesPerQueryMetricsInTrecEvalOrder) {
  // q1's tie (a, b at 2.0) is ordered as trec_eval orders it, b first, whatever the rank column says.
  std::string qrels = write_file("eval_qrels3.tsv", "qid\tpid\nq1\tb\nq2\tz\n");
  std::string run = write_file("eval_tied_run.trec", "q1 Q0 a 1 2.0 t\nq1 Q0 b 2 2.0 t\nq2 Q0 y 1 3.0 t\n");
  std::string per_query = ::testing::TempDir() + "/eval_per_query.tsv";
  Result r = run_dgr("evaluate --run " + run + " --qrels " + qrels + " --per-query " + per_query);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  std::ifstream in(per_query);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(text,
            "qid\tR@1\tR@5\tR@10\tR@20\tR@100\tMRR@10\tnDCG@10\n"
            "q1\t1\t1\t1\t1\t1\t1\t1\n"
            "q2\t0\t0\t0\t0\t0\t0\t0\n");
}

TEST(Cli, EvaluateRejectsABadRunWithFileAndLine) {
  std::string qrels = write_file("eval_qrels2.tsv", "q1\tb\n");
  std::string run = write_file("eval_bad_run.trec", "q1 Q0 a 1 2.0 t\nq1 Q0 b two 1.0 t\n");
  expect_one_line_error(run_dgr("evaluate --run " + run + " --qrels " + qrels), run + ":2:", 1);
}

TEST(Cli, RetrievalCommandsListTheirOptions) {
  Result e = run_dgr("evaluate --help");
  for (const char* s : {"--run", "--qrels", "--corpus", "--per-query"}) EXPECT_NE(e.out.find(s), std::string::npos) << s;
  Result b = run_dgr("bm25 --help");
  for (const char* s : {"--data", "--split", "--out", "--k1", "=0.9", "--b", "=0.4", "--depth", "=100"}) {
    EXPECT_NE(b.out.find(s), std::string::npos) << s << " missing from:\n" << b.out;
  }
}

}  // namespace

namespace {

// --device and --precision of the commands that run the model (trainer/device.h). They are checked before
// any data is read, so the data paths below need not exist.
bool gpu_present() { return std::system("nvidia-smi -L >/dev/null 2>&1") == 0; }

TEST(Cli, DeviceCudaWithoutAGpuIsAStartupError) {
  if (gpu_present()) GTEST_SKIP() << "a GPU is present: --device cuda is valid here";
  const std::vector<std::string> commands = {"train --data /nonexistent", "train --stage distill --data /nonexistent",
                                             "retrieve --model /nonexistent.h5", "mine --model /nonexistent.h5"};
  for (const std::string& command : commands) {
    Result r = run_dgr(command + " --device cuda");
    expect_one_line_error(r, "--device cuda: rank 0 (local rank 0 on ", 2);
    EXPECT_NE(r.err.find("sees no CUDA GPU"), std::string::npos) << command << ": " << r.err;
    EXPECT_NE(r.err.find("use --device cpu"), std::string::npos) << command << ": " << r.err;
  }
  // The config key of the [train] table does the same.
  std::string config = write_file("device_cuda.toml", "[train]\ndevice = \"cuda\"\n");
  expect_one_line_error(run_dgr("--config " + config + " train --data /nonexistent"), "sees no CUDA GPU", 2);
}

TEST(Cli, Bf16AutocastOnTheCpuIsAnError) {
  for (const std::string& stage : std::vector<std::string>{"generate", "distill"}) {
    Result r = run_dgr("train --stage " + stage + " --device cpu --precision bf16 --data /nonexistent");
    EXPECT_EQ(r.exit_code, 2) << stage << ": " << r.err;
    EXPECT_NE(r.err.find("bf16 autocast needs --device cuda"), std::string::npos) << stage << ": " << r.err;
  }
  if (!gpu_present()) {  // auto is the CPU here
    Result r = run_dgr("train --precision bf16 --data /nonexistent");
    EXPECT_EQ(r.exit_code, 2) << r.err;
    EXPECT_NE(r.err.find("bf16 autocast needs --device cuda"), std::string::npos) << r.err;
  }
}

TEST(Cli, DeviceAndPrecisionTakeKnownValuesOnly) {
  EXPECT_EQ(run_dgr("train --device tpu").exit_code, 2);
  EXPECT_EQ(run_dgr("train --precision fp16").exit_code, 2);
  EXPECT_EQ(run_dgr("retrieve --device gpu").exit_code, 2);
  Result help = run_dgr("train --help");
  for (const char* s : {"--device", "=auto", "--precision", "=fp32"}) {
    EXPECT_NE(help.out.find(s), std::string::npos) << s << " missing from:\n" << help.out;
  }
  for (const char* command : {"retrieve --help", "mine --help"}) {
    EXPECT_NE(run_dgr(command).out.find("--device"), std::string::npos) << command;
  }
}

// Range errors say what the value must be, and --help shows each stage's default where they differ.
TEST(Cli, RangeErrorsSayWhatTheValueMustBe) {
  struct Case { const char* args; const char* message; };
  for (const Case& c : {Case{"train --epochs -1", "--epochs: must be more than 0 (not -1)"},
                        Case{"train --batch 0", "--batch: must be at least 1 (not 0)"},
                        Case{"train --warmup 1.5", "--warmup: must be between 0 and 1 (not 1.5)"},
                        Case{"retrieve --beam 0", "--beam: must be at least 1 (not 0)"},
                        Case{"mine --depth -3", "--depth: must be at least 1 (not -3)"},
                        Case{"index --vocab-size 3", "--vocab-size: must be between 16 and 1048576 (not 3)"}}) {
    Result r = run_dgr(c.args);
    EXPECT_EQ(r.exit_code, 2) << c.args;
    EXPECT_NE((r.out + r.err).find(c.message), std::string::npos) << c.args << ": " << r.out << r.err;
  }
  Result help = run_dgr("train --help");
  for (const char* s : {"15 (distill: 3)", "64 (distill: 8)", "0.002 (distill: 0.0001)", "0.98 (distill: 0.999)",
                        "0.01 (distill: 0)", "runs/stage1 (distill: runs/distill)"}) {
    EXPECT_NE(help.out.find(s), std::string::npos) << s << " missing from:\n" << help.out;
  }
}

// The pinned data sets verify against their manifests; a changed file is an error naming it.
TEST(Cli, DataCheckVerifiesTheManifestsSha256) {
  for (const char* subset : {"tiny", "small"}) {
    const std::string dir = std::string(DGR_SOURCE_DIR) + "/datasets/debian-" + subset;
    Result r = run_dgr("data check --data " + dir);
    EXPECT_EQ(r.exit_code, 0) << dir << ": " << r.out << r.err;
    EXPECT_NE(r.out.find("7 files match their SHA-256"), std::string::npos) << r.out;
  }
  const fs::path copy = test_dir() / "pinned_tiny";
  fs::create_directories(copy);
  for (const auto& entry : fs::directory_iterator(std::string(DGR_SOURCE_DIR) + "/datasets/debian-tiny"))
    fs::copy_file(entry.path(), copy / entry.path().filename(), fs::copy_options::overwrite_existing);
  {
    std::ofstream out(copy / "queries.dev.tsv", std::ios::app);
    out << "qextra\tone more query\n";
  }
  Result r = run_dgr("data check --data " + copy.string());
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find((copy / "queries.dev.tsv").string() + ": SHA-256"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("git checkout datasets/"), std::string::npos) << r.err;

  // Splits of any name are checked, not only train/dev/test: a bad line in queries.extra.tsv is an error.
  fs::copy_file(std::string(DGR_SOURCE_DIR) + "/datasets/debian-tiny/queries.dev.tsv", copy / "queries.dev.tsv",
                fs::copy_options::overwrite_existing);
  {
    std::ofstream(copy / "queries.extra.tsv") << "qid\ttext\nx1\tfine\nx1\tagain\n";
  }
  Result extra = run_dgr("data check --data " + copy.string());
  EXPECT_EQ(extra.exit_code, 1) << extra.out << extra.err;
  EXPECT_NE(extra.err.find((copy / "queries.extra.tsv").string() + ":3:"), std::string::npos) << extra.err;
}

}  // namespace
