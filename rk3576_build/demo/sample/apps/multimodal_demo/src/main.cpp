// SPDX-License-Identifier: Apache-2.0
//
// Stand-in for rknn-llm's multimodal demo on the virtual board (there is no NPU under QEMU).
//
//   demo image_path encoder_model_path llm_model_path max_new_tokens max_context_len core_num [platform]
//
// It talks on the console the way the real demo does: the usage line on stderr with fewer than six
// arguments; with RKLLM_LOG_LEVEL>=1 the runtime's version line (driver version read from debugfs)
// and the too-old-driver warning; "rkllm init success" or "rkllm init failed"; "main: LLM Model
// loaded in", "main: ImgEnc Model loaded in" and "main: ImgEnc Model inference took" with their
// times; numbered preset questions, "user: ", a streamed answer after "robot: ", the performance
// table after each answer (RKLLM_LOG_LEVEL>=1); "exit" quits.
//
// The two model files are small text files standing in for the .rkllm model and the .rknn vision
// encoder; their key=value lines set the figures a run produces (standin-vl.rkllm, the same format
// as the llm_demo stand-in's model, and standin-vision.rknn). EMBED_SIZE below is what the real
// 1.2.1 demo hard-codes: when the encoder produces wider embeddings than EMBED_SIZE, the real demo
// overflows its buffer and crashes, and so does this one; narrower ones give a garbled answer.
#include <cctype>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#define IMAGE_HEIGHT 392
#define IMAGE_WIDTH 392
#define IMAGE_TOKEN_NUM 196
#define EMBED_SIZE 1536

#ifndef RUNTIME_VERSION
#define RUNTIME_VERSION "1.2.1"
#endif

namespace {

const char *kModelMagic = "RKLLM-STANDIN-MODEL 1";
const char *kEncoderMagic = "RKNN-STANDIN-ENCODER 1";
const char *kLoadFile = "/sys/kernel/debug/rknpu/load";

struct Model {
    double init_ms = 1200, prefill_ms_per_token = 8, generate_ms_per_token = 60, peak_memory_gb = 1.12;
    int npu_load = 62;
    bool init_fails = false;
    std::vector<std::string> say_at_init;
    std::string say_at_run;
};

struct Encoder {
    double load_ms = 300, infer_ms = 800;
    int embed_size = EMBED_SIZE, image_tokens = IMAGE_TOKEN_NUM, npu_load = 85;
};

const char *kPresets[] = {
    "<image>What is in the image?",
    "<image>Describe the picture in one sentence.",
};

const char *kImageAnswer[] = {
    "The", "picture", "shows", "a", "small", "circuit", "board", "seen", "from", "above,", "with", "a",
    "large", "bright", "chip", "on", "the", "left", "and", "a", "smaller", "one", "to", "its", "right,",
    "framed", "by", "a", "thin", "grey", "border", "on", "a", "dark", "background.",
};

const char *kTextAnswer[] = {
    "I", "can", "answer", "questions", "about", "the", "picture", "loaded", "at", "start;", "put", "<image>",
    "in", "your", "question", "to", "ask", "about", "it.",
};

double now_ms()
{
    using namespace std::chrono;
    return duration_cast<microseconds>(steady_clock::now().time_since_epoch()).count() / 1000.0;
}

void sleep_ms(double ms)
{
    if (ms > 0)
        std::this_thread::sleep_for(std::chrono::microseconds(static_cast<long long>(ms * 1000)));
}

// Tell the (sample) driver how busy the NPU is, so sampling its load sees it; best effort.
void set_npu_load(int core0, int core1)
{
    FILE *f = std::fopen(kLoadFile, "w");
    if (!f)
        return;
    std::fprintf(f, "%d %d\n", core0, core1);
    std::fclose(f);
}

bool read_driver_version(std::string &out)
{
    const char *override_version = std::getenv("RKLLM_STANDIN_DRIVER_VERSION");
    if (override_version && *override_version) {
        out = override_version;
        return true;
    }
    const char *files[] = {"/sys/kernel/debug/rknpu/version", "/proc/rknpu/version"};
    for (const char *name : files) {
        FILE *f = std::fopen(name, "r");
        if (!f)
            continue;
        char line[128];
        int major, minor, patch;
        bool ok = std::fgets(line, sizeof(line), f) &&
                  std::sscanf(line, "RKNPU driver: v%d.%d.%d", &major, &minor, &patch) == 3;
        std::fclose(f);
        if (ok) {
            out = std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
            return true;
        }
    }
    return false;
}

bool version_older(const std::string &version, int major, int minor, int patch)
{
    int a = 0, b = 0, c = 0;
    std::sscanf(version.c_str(), "%d.%d.%d", &a, &b, &c);
    if (a != major)
        return a < major;
    if (b != minor)
        return b < minor;
    return c < patch;
}

// Reads `path`'s key=value lines after its magic first line; false (with a message) when it is not one.
bool read_figures(const char *path, const char *magic, std::vector<std::pair<std::string, std::string>> &out)
{
    FILE *f = std::fopen(path, "r");
    if (!f)
        return false;
    char line[512];
    bool ok = std::fgets(line, sizeof(line), f) && std::strncmp(line, magic, std::strlen(magic)) == 0;
    while (ok && std::fgets(line, sizeof(line), f)) {
        line[std::strcspn(line, "\r\n")] = '\0';
        const char *eq = std::strchr(line, '=');
        if (line[0] == '#' || !eq)
            continue;
        out.emplace_back(std::string(line, eq - line), std::string(eq + 1));
    }
    std::fclose(f);
    return ok;
}

bool load_model(const char *path, Model &m)
{
    std::vector<std::pair<std::string, std::string>> figures;
    if (!read_figures(path, kModelMagic, figures)) {
        std::printf("E rkllm: %s is not a valid rkllm model (cannot open it or bad header)\n", path);
        return false;
    }
    for (const auto &kv : figures) {
        const std::string &k = kv.first, &v = kv.second;
        if (k == "say_at_init")
            m.say_at_init.push_back(v);
        else if (k == "say_at_run")
            m.say_at_run = v;
        else if (k == "init" && v == "failed")
            m.init_fails = true;
        else if (k == "init_ms")
            m.init_ms = std::atof(v.c_str());
        else if (k == "prefill_ms_per_token")
            m.prefill_ms_per_token = std::atof(v.c_str());
        else if (k == "generate_ms_per_token")
            m.generate_ms_per_token = std::atof(v.c_str());
        else if (k == "peak_memory_gb")
            m.peak_memory_gb = std::atof(v.c_str());
        else if (k == "npu_load")
            m.npu_load = std::atoi(v.c_str());
    }
    return true;
}

bool load_encoder(const char *path, Encoder &e)
{
    std::vector<std::pair<std::string, std::string>> figures;
    if (!read_figures(path, kEncoderMagic, figures))
        return false;
    for (const auto &kv : figures) {
        const std::string &k = kv.first, &v = kv.second;
        if (k == "load_ms")
            e.load_ms = std::atof(v.c_str());
        else if (k == "infer_ms")
            e.infer_ms = std::atof(v.c_str());
        else if (k == "embed_size")
            e.embed_size = std::atoi(v.c_str());
        else if (k == "image_tokens")
            e.image_tokens = std::atoi(v.c_str());
        else if (k == "npu_load")
            e.npu_load = std::atoi(v.c_str());
    }
    return true;
}

std::string upper(std::string text)
{
    for (auto &ch : text)
        ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    return text;
}

void answer(const std::string &prompt, const Model &m, const Encoder &e, bool garbled, int max_new_tokens,
            int log_level, double init_ms)
{
    bool with_image = prompt.find("<image>") != std::string::npos;
    const char **words = with_image ? kImageAnswer : kTextAnswer;
    int nwords = with_image ? sizeof(kImageAnswer) / sizeof(kImageAnswer[0])
                            : sizeof(kTextAnswer) / sizeof(kTextAnswer[0]);
    int prompt_tokens = 20 + static_cast<int>(prompt.size()) / 4 + (with_image ? e.image_tokens : 0);
    int tokens = max_new_tokens < nwords ? max_new_tokens : nwords;

    std::printf("robot: ");
    std::fflush(stdout);
    if (!m.say_at_run.empty()) {
        std::printf("%s\n", m.say_at_run.c_str());
        std::fflush(stdout);
        return;
    }
    set_npu_load(m.npu_load, m.npu_load * 9 / 10);
    double start = now_ms();
    sleep_ms(prompt_tokens * m.prefill_ms_per_token);
    double prefill_ms = now_ms() - start;
    start = now_ms();
    for (int i = 0; i < tokens; i++) {
        sleep_ms(m.generate_ms_per_token);
        std::printf("%s%s", i ? " " : "", with_image && garbled ? "<|image_pad|>" : words[i]);
        std::fflush(stdout);
    }
    double generate_ms = now_ms() - start;
    set_npu_load(0, 0);
    std::printf("\n");
    if (log_level >= 1) {
        std::printf("I rkllm:  Model init time (ms)  %.2f\n", init_ms);
        std::printf("I rkllm:  Stage         Total Time (ms)  Tokens    Time per Token (ms)      Tokens per Second\n");
        std::printf("I rkllm:  Prefill       %-16.2f %-9d %-24.2f %.2f\n", prefill_ms, prompt_tokens,
                    prefill_ms / prompt_tokens, prompt_tokens * 1000.0 / prefill_ms);
        std::printf("I rkllm:  Generate      %-16.2f %-9d %-24.2f %.2f\n", generate_ms, tokens,
                    generate_ms / tokens, tokens * 1000.0 / generate_ms);
        std::printf("I rkllm:  Peak Memory Usage (GB)\n");
        std::printf("I rkllm:  %.2f\n", m.peak_memory_gb);
    }
    std::fflush(stdout);
}

}  // namespace

int main(int argc, char **argv)
{
    std::setvbuf(stdout, nullptr, _IOLBF, 0);
    if (argc < 7) {
        std::cerr << "Usage: " << argv[0]
                  << " image_path encoder_model_path llm_model_path max_new_tokens max_context_len core_num"
                  << " [platform]\n";
        return -1;
    }
    const char *level = std::getenv("RKLLM_LOG_LEVEL");
    const char *board = std::getenv("RKLLM_STANDIN_PLATFORM");
    int log_level = level ? std::atoi(level) : 0;
    std::string platform = board && *board ? board : "RK3576";
    int max_new_tokens = std::atoi(argv[4]);
    Model model;
    Encoder encoder;

    double start = now_ms();
    std::string driver;
    if (!read_driver_version(driver)) {
        std::printf("E RKNN: failed to open rknpu module, need to insmod rknpu dirver!\n");
        std::printf("rkllm init failed\n");
        return -1;
    }
    if (log_level >= 1)
        std::printf("I rkllm: rkllm-runtime version: %s, rknpu driver version: %s, platform: %s\n",
                    RUNTIME_VERSION, driver.c_str(), platform.c_str());
    // as RKLLM runtime 1.2.1: the warning names its own minimum, 0.9.7; 0.9.7 passes silently
    if (version_older(driver, 0, 9, 7))
        std::printf("W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7\n");
    if (argc > 7 && upper(argv[7]) != platform) {
        std::printf("Platform error: must be either RK3588, RK3576, RV1126B, or RK3562.\n");
        std::printf("rkllm init failed\n");
        return -1;
    }
    if (!load_model(argv[3], model) || max_new_tokens <= 0 || std::atoi(argv[5]) <= 0) {
        std::printf("rkllm init failed\n");
        return -1;
    }
    for (const auto &line : model.say_at_init)
        std::printf("%s\n", line.c_str());
    if (model.init_fails) {
        std::printf("rkllm init failed\n");
        return -1;
    }
    sleep_ms(model.init_ms);
    double init_ms = now_ms() - start;
    std::printf("rkllm init success\n");
    std::printf("%s: LLM Model loaded in %8.2f ms\n", __func__, init_ms);

    start = now_ms();
    if (!load_encoder(argv[2], encoder)) {
        std::printf("init_imgenc fail! ret=%d model_path=%s\n", -1, argv[2]);
        return -1;
    }
    sleep_ms(encoder.load_ms);
    std::printf("%s: ImgEnc Model loaded in %8.2f ms\n", __func__, now_ms() - start);

    FILE *image = std::fopen(argv[1], "rb");
    if (!image) {  // what OpenCV does with an image it cannot read
        std::cerr << "terminate called after throwing an instance of 'cv::Exception'\n"
                  << "  what():  OpenCV(stand-in) error: (-215:Assertion failed) !_src.empty() in function 'cvtColor'\n";
        std::abort();
    }
    std::fclose(image);
    start = now_ms();
    set_npu_load(encoder.npu_load, encoder.npu_load);
    sleep_ms(encoder.infer_ms);
    set_npu_load(0, 0);
    if (encoder.embed_size > EMBED_SIZE) {  // the encoder writes past the demo's buffer
        std::fflush(stdout);
        std::raise(SIGSEGV);
    }
    std::printf("%s: ImgEnc Model inference took %8.2f ms\n", __func__, now_ms() - start);
    bool garbled = encoder.embed_size < EMBED_SIZE;

    std::printf("\n********************** Type a question's number, or your own question **********************\n\n");
    for (size_t i = 0; i < sizeof(kPresets) / sizeof(kPresets[0]); i++)
        std::printf("[%zu] %s\n", i, kPresets[i]);
    std::printf("\n*************************************************************************\n");
    std::string line;
    for (;;) {
        std::printf("\nuser: ");
        std::fflush(stdout);
        if (!std::getline(std::cin, line))
            break;
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        if (line == "exit")
            break;
        if (line == "clear" || line.empty())
            continue;
        for (size_t i = 0; i < sizeof(kPresets) / sizeof(kPresets[0]); i++) {
            if (line == std::to_string(i)) {
                line = kPresets[i];
                std::printf("%s\n", line.c_str());
            }
        }
        answer(line, model, encoder, garbled, max_new_tokens, log_level, init_ms);
    }
    return 0;
}
