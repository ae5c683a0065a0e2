// SPDX-License-Identifier: GPL-2.0
/*
 * Sample stand-in for the SDK framework's kconfig `conf` (rk3576-build demo).
 * Like the real one it is compiled from source with the build host's gcc at
 * the first lunch, so the host needs its C library headers (libc6-dev).
 *
 *   conf --defconfig=<file> [--defaults=<file>] <output .config>
 *
 * Writes RK_DEFCONFIG, RK_CHIP_FAMILY and RK_CHIP (from the environment), then
 * every default with the defconfig's values applied, then the defconfig's
 * other settings. "# RK_X is not set" lines switch a default off.
 */
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SYMBOLS 256
#define MAX_LINE 1024

struct symbol {
	char name[128];
	char value[MAX_LINE];
	int unset;
};

static struct symbol symbols[MAX_SYMBOLS];
static int nsymbols;

static struct symbol *lookup(const char *name)
{
	int i;

	for (i = 0; i < nsymbols; i++)
		if (!strcmp(symbols[i].name, name))
			return &symbols[i];
	if (nsymbols == MAX_SYMBOLS) {
		fprintf(stderr, "conf: too many symbols\n");
		exit(1);
	}
	snprintf(symbols[nsymbols].name, sizeof(symbols[nsymbols].name), "%s", name);
	return &symbols[nsymbols++];
}

static void read_config(const char *path)
{
	char line[MAX_LINE], name[128];
	FILE *in = fopen(path, "r");

	if (!in) {
		perror(path);
		exit(1);
	}
	while (fgets(line, sizeof(line), in)) {
		char *eq;
		struct symbol *sym;

		line[strcspn(line, "\n")] = '\0';
		if (sscanf(line, "# %127s is not set", name) == 1 && !strncmp(name, "RK_", 3)) {
			sym = lookup(name);
			sym->unset = 1;
			sym->value[0] = '\0';
			continue;
		}
		eq = strchr(line, '=');
		if (strncmp(line, "RK_", 3) || !eq || eq - line >= (int)sizeof(name))
			continue;
		*eq = '\0';
		sym = lookup(line);
		sym->unset = 0;
		snprintf(sym->value, sizeof(sym->value), "%s", eq + 1);
	}
	fclose(in);
}

static const char *env_or(const char *name, const char *fallback)
{
	const char *value = getenv(name);

	return value && *value ? value : fallback;
}

int main(int argc, char **argv)
{
	const char *defconfig = NULL, *defaults = NULL, *output = NULL;
	FILE *out;
	int i;

	setlocale(LC_ALL, "");

	for (i = 1; i < argc; i++) {
		if (!strncmp(argv[i], "--defconfig=", 12))
			defconfig = argv[i] + 12;
		else if (!strncmp(argv[i], "--defaults=", 11))
			defaults = argv[i] + 11;
		else
			output = argv[i];
	}
	if (!defconfig || !output) {
		fprintf(stderr, "usage: %s --defconfig=<file> [--defaults=<file>] <output>\n", argv[0]);
		return 2;
	}

	if (defaults)
		read_config(defaults);
	read_config(defconfig);

	out = fopen(output, "w");
	if (!out) {
		perror(output);
		return 1;
	}
	fprintf(out, "#\n# Automatically generated file; DO NOT EDIT.\n# Rockchip Linux SDK Configuration\n#\n");
	fprintf(out, "RK_DEFCONFIG=\"%s\"\n", env_or("RK_DEFCONFIG", defconfig));
	fprintf(out, "RK_CHIP_FAMILY=\"%s\"\n", env_or("RK_CHIP_FAMILY", ""));
	fprintf(out, "RK_CHIP=\"%s\"\n", env_or("RK_CHIP", ""));
	for (i = 0; i < nsymbols; i++) {
		const char *name = symbols[i].name;

		if (!strcmp(name, "RK_DEFCONFIG") || !strcmp(name, "RK_CHIP_FAMILY") || !strcmp(name, "RK_CHIP"))
			continue;
		if (symbols[i].unset)
			fprintf(out, "# %s is not set\n", name);
		else
			fprintf(out, "%s=%s\n", name, symbols[i].value);
	}
	if (fclose(out)) {
		perror(output);
		return 1;
	}
	printf("#\n# configuration written to %s\n#\n", output);
	return 0;
}
