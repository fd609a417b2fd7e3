/* LayerNorm forward and backward in C, checked against npgpt's golden bundle.
 *
 *   cc -O2 -o layernorm layernorm.c -lm
 *   ./layernorm BUNDLE/components.safetensors results.safetensors
 *   npgpt golden verify BUNDLE results.safetensors
 *
 * Reads "layer_norm x" (N, C), "layer_norm scale", "layer_norm shift" (C) and "layer_norm dout"
 * (N, C) from the bundle; writes "layer_norm out", "layer_norm dx", "layer_norm dscale" and
 * "layer_norm dshift" in float64, the names the bundle's manifest gives them. The math is the
 * book's LayerNorm (biased variance, eps 1e-5) and docs/math/layer_norm.md's three-term backward.
 *
 * safetensors is an 8-byte little-endian header length, a JSON header
 * {"name": {"dtype": "F64", "shape": [...], "data_offsets": [begin, end]}, ...}, then the data.
 * This reader finds a tensor by name in the header text: enough for files npgpt writes.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path, long *size) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc(*size + 1);
    if (fread(buf, 1, *size, f) != (size_t)*size) { fprintf(stderr, "%s: short read\n", path); exit(2); }
    fclose(f);
    buf[*size] = 0;
    return buf;
}

/* The tensor called `name`: its data (float64) and its number of elements. */
static double *tensor(char *file, const char *name, long *count) {
    uint64_t header_len;
    memcpy(&header_len, file, 8);
    char key[128];
    snprintf(key, sizeof key, "\"%s\":", name);
    char *entry = strstr(file + 8, key);
    if (!entry || entry > file + 8 + header_len) { fprintf(stderr, "no tensor %s\n", name); exit(2); }
    if (!strstr(entry, "\"F64\"")) { fprintf(stderr, "%s is not F64\n", name); exit(2); }
    long begin, end;
    if (sscanf(strstr(entry, "\"data_offsets\":") + 15, "[%ld,%ld]", &begin, &end) != 2) {
        fprintf(stderr, "cannot parse %s\n", name);
        exit(2);
    }
    *count = (end - begin) / 8;
    double *data = malloc(end - begin);
    memcpy(data, file + 8 + header_len + begin, end - begin);
    return data;
}

typedef struct { const char *name; const double *data; long rows, cols; } Out;

static void write_safetensors(const char *path, const Out *outs, int n) {
    char header[4096] = "{";
    long offset = 0;
    for (int i = 0; i < n; i++) {
        long bytes = outs[i].rows * outs[i].cols * 8;
        char item[256];
        if (outs[i].rows > 1)
            snprintf(item, sizeof item, "%s\"%s\":{\"dtype\":\"F64\",\"shape\":[%ld,%ld],\"data_offsets\":[%ld,%ld]}",
                     i ? "," : "", outs[i].name, outs[i].rows, outs[i].cols, offset, offset + bytes);
        else
            snprintf(item, sizeof item, "%s\"%s\":{\"dtype\":\"F64\",\"shape\":[%ld],\"data_offsets\":[%ld,%ld]}",
                     i ? "," : "", outs[i].name, outs[i].cols, offset, offset + bytes);
        strcat(header, item);
        offset += bytes;
    }
    strcat(header, "}");
    while (strlen(header) % 8) strcat(header, " "); /* data starts 8-byte aligned */
    uint64_t len = strlen(header);
    FILE *f = fopen(path, "wb");
    if (!f) { perror(path); exit(2); }
    fwrite(&len, 8, 1, f);
    fwrite(header, 1, len, f);
    for (int i = 0; i < n; i++) fwrite(outs[i].data, 8, outs[i].rows * outs[i].cols, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s components.safetensors results.safetensors\n", argv[0]); return 2; }
    long size, nx, C, nd;
    char *file = read_file(argv[1], &size);
    double *x = tensor(file, "layer_norm x", &nx);
    double *scale = tensor(file, "layer_norm scale", &C);
    double *shift = tensor(file, "layer_norm shift", &C);
    double *dout = tensor(file, "layer_norm dout", &nd);
    long N = nx / C;
    double *out = malloc(nx * 8), *dx = malloc(nx * 8), *dscale = calloc(C, 8), *dshift = calloc(C, 8);
    double *norm = malloc(C * 8), *g = malloc(C * 8);
    for (long r = 0; r < N; r++) {
        const double *xr = x + r * C, *dr = dout + r * C;
        double mean = 0, var = 0;
        for (long j = 0; j < C; j++) mean += xr[j];
        mean /= C;
        for (long j = 0; j < C; j++) var += (xr[j] - mean) * (xr[j] - mean);
        var /= C; /* biased, as the book's unbiased=False */
        double rstd = 1.0 / sqrt(var + 1e-5);
        double mean_g = 0, mean_gn = 0;
        for (long j = 0; j < C; j++) {
            norm[j] = (xr[j] - mean) * rstd;
            out[r * C + j] = scale[j] * norm[j] + shift[j];
            dscale[j] += dr[j] * norm[j]; /* summed over rows */
            dshift[j] += dr[j];
            g[j] = dr[j] * scale[j]; /* gradient of the normalized value */
            mean_g += g[j];
            mean_gn += g[j] * norm[j];
        }
        mean_g /= C;
        mean_gn /= C;
        for (long j = 0; j < C; j++) dx[r * C + j] = rstd * (g[j] - mean_g - norm[j] * mean_gn);
    }
    Out outs[] = {{"layer_norm out", out, N, C}, {"layer_norm dx", dx, N, C},
                  {"layer_norm dscale", dscale, 1, C}, {"layer_norm dshift", dshift, 1, C}};
    write_safetensors(argv[2], outs, 4);
    printf("wrote %s: layer_norm out, dx, dscale, dshift for %ld rows of %ld\n", argv[2], N, C);
    return 0;
}
