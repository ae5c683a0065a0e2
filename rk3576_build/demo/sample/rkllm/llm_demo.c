// SPDX-License-Identifier: Apache-2.0
/*
 * Stand-in for rknn-llm's llm_demo on the virtual board (there is no NPU here).
 *
 *   llm_demo model_path max_new_tokens max_context_len
 *
 * It talks on the console the way the real demo does: "rkllm init start", the
 * runtime's version line (RKLLM_LOG_LEVEL>=1) with the driver version read from
 * debugfs, the too-old-driver warning, "rkllm init success" or "rkllm init failed",
 * numbered preset questions, "user: ", a streamed answer after "robot: ", the
 * performance table after each answer (RKLLM_LOG_LEVEL>=1), and "exit" quits.
 *
 * The model file is a small text file standing in for a .rkllm model; its
 * key=value lines set the figures the run produces (see standin.rkllm).
 * RKLLM_STANDIN_DRIVER_VERSION (a test hook) overrides the driver version the
 * runtime reports, as a runtime talking to another driver than debugfs shows would;
 * RKLLM_STANDIN_PLATFORM the platform it reports.
 *
 * Failure modes of the real runtime, set in the model file: `say_at_init=<line>`
 * (up to four) prints a line after the version line, as the runtime prints its
 * `E RKNN:`/`E rkllm:` errors; `init=failed` then ends with "rkllm init failed";
 * `say_at_run=<line>` replaces each answer by that line (no table), as a runtime
 * whose inference fails after a successful init.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RUNTIME_VERSION "1.2.1"
#define MODEL_MAGIC "RKLLM-STANDIN-MODEL 1"
#define LOAD_FILE "/sys/kernel/debug/rknpu/load"
#define MAX_SAY 4

struct model {
	double init_ms, prefill_ms_per_token, generate_ms_per_token, peak_memory_gb;
	int npu_load, init_fails, nsay;
	char say_at_init[MAX_SAY][256], say_at_run[256];
};

static const char *presets[] = {
	"Explain in two sentences what an NPU is.",
	"Write a haiku about a small board that runs a large model.",
	"What does a kernel driver version tell a runtime library?",
};

static const char *answer_words[] = {
	"An", "NPU", "is", "a", "processor", "built", "for", "the", "matrix", "arithmetic", "of",
	"neural", "networks,", "so", "a", "model", "runs", "faster", "and", "with", "less", "power",
	"than", "on", "the", "CPU.", "On", "the", "RK3576", "it", "has", "two", "cores", "that", "the",
	"runtime", "drives", "through", "the", "rknpu", "kernel", "driver.",
};

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000.0 + ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms)
{
	if (ms > 0)
		usleep((useconds_t)(ms * 1000));
}

/* Tell the (sample) driver how busy the NPU is, so sampling its load sees it; best effort. */
static void set_npu_load(int core0, int core1)
{
	FILE *f = fopen(LOAD_FILE, "w");

	if (!f)
		return;
	fprintf(f, "%d %d\n", core0, core1);
	fclose(f);
}

static int read_driver_version(char *out, size_t size)
{
	const char *files[] = { "/sys/kernel/debug/rknpu/version", "/proc/rknpu/version" };
	const char *override = getenv("RKLLM_STANDIN_DRIVER_VERSION");
	char line[128];
	int major, minor, patch;

	if (override && *override) {
		snprintf(out, size, "%s", override);
		return 0;
	}
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		FILE *f = fopen(files[i], "r");

		if (!f)
			continue;
		if (fgets(line, sizeof(line), f) &&
		    sscanf(line, "RKNPU driver: v%d.%d.%d", &major, &minor, &patch) == 3) {
			fclose(f);
			snprintf(out, size, "%d.%d.%d", major, minor, patch);
			return 0;
		}
		fclose(f);
	}
	return -1;
}

static int version_older(const char *version, int major, int minor, int patch)
{
	int a = 0, b = 0, c = 0;

	sscanf(version, "%d.%d.%d", &a, &b, &c);
	if (a != major)
		return a < major;
	if (b != minor)
		return b < minor;
	return c < patch;
}

static int load_model(const char *path, struct model *m)
{
	char line[256];
	FILE *f = fopen(path, "r");

	*m = (struct model){ 1200, 8, 60, 1.12, 62, 0, 0, { "" }, "" };
	if (!f) {
		printf("E rkllm: failed to open model file %s\n", path);
		return -1;
	}
	if (!fgets(line, sizeof(line), f) || strncmp(line, MODEL_MAGIC, strlen(MODEL_MAGIC)) != 0) {
		printf("E rkllm: %s is not a valid rkllm model (bad header)\n", path);
		fclose(f);
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		double v;

		line[strcspn(line, "\r\n")] = '\0';
		if (strncmp(line, "say_at_init=", 12) == 0 && m->nsay < MAX_SAY)
			snprintf(m->say_at_init[m->nsay++], sizeof(m->say_at_init[0]), "%s", line + 12);
		else if (strncmp(line, "say_at_run=", 11) == 0)
			snprintf(m->say_at_run, sizeof(m->say_at_run), "%s", line + 11);
		else if (strcmp(line, "init=failed") == 0)
			m->init_fails = 1;
		else if (sscanf(line, "init_ms=%lf", &v) == 1)
			m->init_ms = v;
		else if (sscanf(line, "prefill_ms_per_token=%lf", &v) == 1)
			m->prefill_ms_per_token = v;
		else if (sscanf(line, "generate_ms_per_token=%lf", &v) == 1)
			m->generate_ms_per_token = v;
		else if (sscanf(line, "peak_memory_gb=%lf", &v) == 1)
			m->peak_memory_gb = v;
		else if (sscanf(line, "npu_load=%lf", &v) == 1)
			m->npu_load = (int)v;
	}
	fclose(f);
	return 0;
}

static void answer(const char *prompt, const struct model *m, int max_new_tokens, int log_level,
		   double init_ms)
{
	size_t nwords = sizeof(answer_words) / sizeof(answer_words[0]);
	int prompt_tokens = 24 + (int)strlen(prompt) / 4; /* the chat template adds its own */
	int tokens = max_new_tokens < (int)nwords ? max_new_tokens : (int)nwords;
	double start, prefill_ms, generate_ms;

	if (*m->say_at_run) {
		printf("robot: %s\n", m->say_at_run);
		fflush(stdout);
		return;
	}
	set_npu_load(m->npu_load, m->npu_load * 9 / 10);
	start = now_ms();
	sleep_ms(prompt_tokens * m->prefill_ms_per_token);
	prefill_ms = now_ms() - start;
	printf("robot: ");
	fflush(stdout);
	start = now_ms();
	for (int i = 0; i < tokens; i++) {
		sleep_ms(m->generate_ms_per_token);
		printf("%s%s", i ? " " : "", answer_words[i]);
		fflush(stdout);
	}
	generate_ms = now_ms() - start;
	set_npu_load(0, 0);
	printf("\n");
	if (log_level >= 1) {
		printf("I rkllm:  Model init time (ms)  %.2f\n", init_ms);
		printf("I rkllm:  Stage         Total Time (ms)  Tokens    Time per Token (ms)      Tokens per Second\n");
		printf("I rkllm:  Prefill       %-16.2f %-9d %-24.2f %.2f\n", prefill_ms, prompt_tokens,
		       prefill_ms / prompt_tokens, prompt_tokens * 1000.0 / prefill_ms);
		printf("I rkllm:  Generate      %-16.2f %-9d %-24.2f %.2f\n", generate_ms, tokens,
		       generate_ms / tokens, tokens * 1000.0 / generate_ms);
		printf("I rkllm:  Peak Memory Usage (GB)\n");
		printf("I rkllm:  %.2f\n", m->peak_memory_gb);
	}
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *level = getenv("RKLLM_LOG_LEVEL");
	const char *platform = getenv("RKLLM_STANDIN_PLATFORM");
	int log_level = level ? atoi(level) : 0;
	char driver[32], line[1024];
	struct model model;
	double start, init_ms;
	int max_new_tokens;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 4) {
		fprintf(stderr, "Usage: %s model_path max_new_tokens max_context_len\n", argv[0]);
		return -1;
	}
	max_new_tokens = atoi(argv[2]);
	printf("rkllm init start\n");
	start = now_ms();
	if (read_driver_version(driver, sizeof(driver)) != 0) {
		printf("E rkllm: failed to read the rknpu driver version: is the rknpu driver loaded "
		       "and debugfs mounted?\n");
		printf("rkllm init failed\n");
		return -1;
	}
	if (log_level >= 1)
		printf("I rkllm: rkllm-runtime version: %s, rknpu driver version: %s, platform: %s\n",
		       RUNTIME_VERSION, driver, platform && *platform ? platform : "RK3576");
	/* as RKLLM runtime 1.2.1: the warning names its own minimum, 0.9.7; 0.9.7 passes silently */
	if (version_older(driver, 0, 9, 7))
		printf("W rkllm: Warning: Your rknpu driver version is too low, please upgrade to 0.9.7\n");
	if (load_model(argv[1], &model) != 0 || max_new_tokens <= 0 || atoi(argv[3]) <= 0) {
		printf("rkllm init failed\n");
		return -1;
	}
	for (int i = 0; i < model.nsay; i++)
		printf("%s\n", model.say_at_init[i]);
	if (model.init_fails) {
		printf("rkllm init failed\n");
		return -1;
	}
	sleep_ms(model.init_ms);
	init_ms = now_ms() - start;
	printf("rkllm init success\n");
	printf("\n*** Type a question's number for a preset question, or your own question ***\n\n");
	for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++)
		printf("[%zu] %s\n", i, presets[i]);
	printf("\n*************************************************************************\n");
	for (;;) {
		char *end;
		long preset;

		printf("\nuser: ");
		fflush(stdout);
		if (!fgets(line, sizeof(line), stdin))
			break;
		line[strcspn(line, "\r\n")] = '\0';
		if (strcmp(line, "exit") == 0)
			break;
		if (!*line)
			continue;
		preset = strtol(line, &end, 10);
		if (*end == '\0' && preset >= 0 && preset < (long)(sizeof(presets) / sizeof(presets[0]))) {
			snprintf(line, sizeof(line), "%s", presets[preset]);
			printf("%s\n", line);
		}
		answer(line, &model, max_new_tokens, log_level, init_ms);
	}
	return 0;
}
