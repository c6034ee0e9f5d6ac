/* The CPU kernel of the entropy scorer (apt_viz/core/_entropy.py, docs/performance.md).
 *
 * Three loops that the torch path runs as many small ops, each here one pass over memory:
 *
 *   base_counts     gray level of every pixel, counted into its base cell's histogram
 *   merge_children  a coarser grid's histograms as the sums of their 2x2 children's
 *   lookup          the entropy term of every count, from a table
 *
 * Bit-identity with the torch path: the counts are exact integers, and the levels come from the
 * contract's float32 operations in its order, ((w0 R + w1 G) + w2 B), each product and sum rounded
 * to float32. The build passes -ffp-contract=off so no fused multiply-add skips a rounding (setup.py).
 * The terms are summed by torch.sum in Python, the very reduction of the torch path. The loops
 * release the GIL and never start threads: the time does not depend on torch's thread count, and a
 * busy core slows one call down, it does not make it wait at a barrier.
 *
 * Arrays arrive through the buffer protocol (numpy views of torch tensors); every shape, type and
 * index is checked here, so a wrong argument raises ValueError rather than writing out of bounds.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* --- buffers ----------------------------------------------------------------------------------- */

/* The struct format code of a buffer without its byte-order prefix. */
static const char *format_of(const Py_buffer *view) {
    const char *f = view->format ? view->format : "B";
    return (f[0] == '=' || f[0] == '<' || f[0] == '@' || f[0] == '|') ? f + 1 : f;
}

/* Byte width of an unsigned-8 / signed-16 / signed-32 count buffer, or 0 for any other type. */
static int count_width(const Py_buffer *view) {
    const char *f = format_of(view);
    if (strcmp(f, "B") == 0 && view->itemsize == 1) return 1;
    if (strcmp(f, "h") == 0 && view->itemsize == 2) return 2;
    if ((strcmp(f, "i") == 0 || strcmp(f, "l") == 0) && view->itemsize == 4) return 4;
    return 0;
}

/* --- 1. base histograms ------------------------------------------------------------------------- */

/* The levels of one image row into out[0, width): the float32 gray value (w0 times the only channel
 * when not RGB), times scale when scaled, clamped to [0, top] and truncated (the floor of a value >= 0).
 * Returns whether a value was NaN (its level is then 0). */
#define ROW_LEVELS(NAME, T)                                                                           \
    static int NAME(const char *r, const char *g, const char *b, Py_ssize_t step, Py_ssize_t width,   \
                    const float *w, int rgb, float scale, int scaled, float top, int32_t *out) {     \
        int nan = 0;                                                                                  \
        if (step == (Py_ssize_t)sizeof(T) && rgb && !scaled) { /* contiguous RGB: vectorized */      \
            const T *restrict rp = (const T *)r, *restrict gp = (const T *)g, *restrict bp = (const T *)b; \
            for (Py_ssize_t x = 0; x < width; x++) {                                                  \
                float v = (float)rp[x] * w[0];                                                        \
                v = v + (float)gp[x] * w[1];                                                          \
                v = v + (float)bp[x] * w[2];                                                          \
                nan |= v != v;                                                                        \
                v = v >= 0.0f ? v : 0.0f; /* NaN -> 0 too */                                          \
                v = v > top ? top : v;                                                                \
                out[x] = (int32_t)v;                                                                  \
            }                                                                                         \
            return nan;                                                                               \
        }                                                                                             \
        for (Py_ssize_t x = 0; x < width; x++) {                                                      \
            float v = (float)*(const T *)(r + x * step) * w[0];                                       \
            if (rgb) {                                                                                \
                v = v + (float)*(const T *)(g + x * step) * w[1];                                     \
                v = v + (float)*(const T *)(b + x * step) * w[2];                                     \
            }                                                                                         \
            if (scaled) v = v * scale;                                                                \
            nan |= v != v;                                                                            \
            v = v >= 0.0f ? v : 0.0f;                                                                 \
            v = v > top ? top : v;                                                                    \
            out[x] = (int32_t)v;                                                                      \
        }                                                                                             \
        return nan;                                                                                   \
    }
ROW_LEVELS(levels_f32, float)
ROW_LEVELS(levels_u8, uint8_t)

/* Count one row of levels into its row of cells (cell c holds levels [c * size, (c + 1) * size)),
 * pixel x into way x % 4 of the cell's histogram: way 0 is the counts themselves, ways 1-3 lie in
 * `ways`, n counts apart. A flat region repeats one level, and with a single histogram each
 * increment would wait for the previous one to be stored. */
#define COUNT_ROW(NAME, C)                                                                            \
    static void NAME(char *cells, char *ways, Py_ssize_t n, const int32_t *levels, Py_ssize_t width,  \
                     Py_ssize_t size, Py_ssize_t bins) {                                              \
        C *h0 = (C *)cells, *h1 = (C *)ways, *h2 = h1 + n, *h3 = h2 + n;                              \
        for (Py_ssize_t x0 = 0; x0 < width; x0 += size, h0 += bins, h1 += bins, h2 += bins, h3 += bins) { \
            Py_ssize_t x1 = x0 + size < width ? x0 + size : width, x = x0;                           \
            for (; x + 4 <= x1; x += 4) {                                                             \
                h0[levels[x]]++;                                                                      \
                h1[levels[x + 1]]++;                                                                  \
                h2[levels[x + 2]]++;                                                                  \
                h3[levels[x + 3]]++;                                                                  \
            }                                                                                         \
            for (; x < x1; x++) h0[levels[x]]++;                                                      \
        }                                                                                             \
    }                                                                                                 \
    /* Add ways 1-3 into way 0. */                                                                    \
    static void NAME##_fold(char *cells, const char *ways, Py_ssize_t n) {                           \
        C *h = (C *)cells;                                                                            \
        const C *w1 = (const C *)ways, *w2 = w1 + n, *w3 = w2 + n;                                    \
        for (Py_ssize_t i = 0; i < n; i++) h[i] = (C)(h[i] + w1[i] + w2[i] + w3[i]);                  \
    }                                                                                                 \
    /* Add `pad` pixels of level 0 to `count` consecutive histograms. */                              \
    static void NAME##_pad(char *cells, Py_ssize_t count, Py_ssize_t bins, Py_ssize_t pad) {         \
        C *h = (C *)cells;                                                                            \
        for (Py_ssize_t i = 0; i < count; i++) h[i * bins] = (C)(h[i * bins] + pad);                  \
    }
COUNT_ROW(count_u8, uint8_t)
COUNT_ROW(count_i16, int16_t)
COUNT_ROW(count_i32, int32_t)

typedef void (*count_fn)(char *, char *, Py_ssize_t, const int32_t *, Py_ssize_t, Py_ssize_t, Py_ssize_t);
typedef void (*fold_fn)(char *, const char *, Py_ssize_t);
typedef void (*pad_fn)(char *, Py_ssize_t, Py_ssize_t, Py_ssize_t);

/* Level 0 for the pixels of a row of cells that lie beyond the image: `inside` of its `size` pixel
 * rows are in the image, and of its cells the first `full` are whole columns, then one of `partial`
 * columns when partial > 0. */
static void pad_row(pad_fn pad, char *line, Py_ssize_t cols, Py_ssize_t bins, Py_ssize_t item, Py_ssize_t size,
                    Py_ssize_t inside, Py_ssize_t full, Py_ssize_t partial) {
    Py_ssize_t cell_bytes = bins * item, area = size * size;
    if (inside < size) pad(line, full, bins, area - inside * size);
    Py_ssize_t next = full;
    if (partial) pad(line + next++ * cell_bytes, 1, bins, area - inside * partial);
    pad(line + next * cell_bytes, cols - next, bins, area);
}

PyDoc_STRVAR(base_counts_doc,
"base_counts(pixels, counts, weights, scale, patch_size)\n--\n\n"
"Fill counts (B, R, C, bins), C-contiguous uint8/int16/int32, with the gray-level histograms of the\n"
"patch_size cells of pixels (B, channels, H, W), float32 or uint8 with any strides. weights: the\n"
"three float32 channel weights (only the first is used when channels != 3); scale: the float32\n"
"factor after them, 1.0 for none. Pixels beyond the image count as level 0, and so does NaN.\n"
"Returns whether a pixel was NaN (the caller raises). Raises ValueError when the arrays do not fit.");

static PyObject *base_counts(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *pixels_obj, *counts_obj;
    float w[3], scale;
    Py_ssize_t size;
    if (!PyArg_ParseTuple(args, "OO(fff)fn", &pixels_obj, &counts_obj, &w[0], &w[1], &w[2], &scale, &size))
        return NULL;
    Py_buffer px, ct;
    if (PyObject_GetBuffer(pixels_obj, &px, PyBUF_RECORDS_RO) < 0) return NULL;
    if (PyObject_GetBuffer(counts_obj, &ct, PyBUF_RECORDS | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&px);
        return NULL;
    }
    PyObject *result = NULL;
    int32_t *levels = NULL;
    char *ways = NULL;
    const char *pf = format_of(&px);
    int is_float = strcmp(pf, "f") == 0 && px.itemsize == 4, is_u8 = strcmp(pf, "B") == 0 && px.itemsize == 1;
    int width_bytes = count_width(&ct);
    if (px.ndim != 4 || ct.ndim != 4 || !(is_float || is_u8) || !width_bytes || size < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "base_counts: pixels (B, C, H, W) float32 or uint8, counts (B, R, C, bins) uint8/int16/int32");
        goto done;
    }
    Py_ssize_t batch = px.shape[0], channels = px.shape[1], height = px.shape[2], width = px.shape[3];
    Py_ssize_t rows = ct.shape[1], cols = ct.shape[2], bins = ct.shape[3];
    count_fn count = width_bytes == 1 ? count_u8 : width_bytes == 2 ? count_i16 : count_i32;
    fold_fn fold = width_bytes == 1 ? count_u8_fold : width_bytes == 2 ? count_i16_fold : count_i32_fold;
    pad_fn pad = width_bytes == 1 ? count_u8_pad : width_bytes == 2 ? count_i16_pad : count_i32_pad;
    Py_ssize_t max_count = width_bytes == 1 ? UINT8_MAX : width_bytes == 2 ? INT16_MAX : INT32_MAX;
    if (ct.shape[0] != batch || channels < 1 || rows * size < height || cols * size < width || bins < 1
        || bins > (1 << 24) || size > 46340 || size * size > max_count) {
        PyErr_SetString(PyExc_ValueError, "base_counts: the counts do not fit the pixels, patch size and bins");
        goto done;
    }
    Py_ssize_t n = cols * bins, line_bytes = n * ct.itemsize;
    levels = malloc(sizeof(int32_t) * (size_t)(width > 0 ? width : 1));
    ways = malloc((size_t)(3 * line_bytes) + 1);
    if (!levels || !ways) {
        PyErr_NoMemory();
        goto done;
    }
    int rgb = channels == 3, scaled = scale != 1.0f, nan = 0;
    float top = (float)(bins - 1);
    Py_ssize_t full_rows = height / size, full_cols = width / size;
    Py_ssize_t rest_rows = height % size, rest_cols = width % size;
    Py_BEGIN_ALLOW_THREADS
    memset(ct.buf, 0, (size_t)ct.len);
    for (Py_ssize_t i = 0; i < batch; i++) {
        char *image = (char *)ct.buf + i * rows * line_bytes;
        const char *plane = (const char *)px.buf + i * px.strides[0];
        for (Py_ssize_t top_row = 0; top_row < height; top_row += size) {
            char *line = image + (top_row / size) * line_bytes;
            memset(ways, 0, (size_t)(3 * line_bytes));
            for (Py_ssize_t y = top_row; y < top_row + size && y < height; y++) {
                const char *r = plane + y * px.strides[2];
                const char *g = rgb ? r + px.strides[1] : r, *b = rgb ? r + 2 * px.strides[1] : r;
                nan |= (is_float ? levels_f32 : levels_u8)(r, g, b, px.strides[3], width, w, rgb, scale, scaled,
                                                           top, levels);
                count(line, ways, n, levels, width, size, bins);
            }
            fold(line, ways, n);
        }
        for (Py_ssize_t row = 0; row < rows; row++) {
            Py_ssize_t inside = row < full_rows ? size : row == full_rows ? rest_rows : 0;
            pad_row(pad, image + row * line_bytes, cols, bins, ct.itemsize, size, inside, full_cols, rest_cols);
        }
    }
    Py_END_ALLOW_THREADS
    result = PyBool_FromLong(nan);
done:
    free(levels);
    free(ways);
    PyBuffer_Release(&px);
    PyBuffer_Release(&ct);
    return result;
}

/* --- 2. coarser grids --------------------------------------------------------------------------- */

#define MERGE(NAME, CI, CO)                                                                           \
    static void NAME(const char *in, char *out, Py_ssize_t batch, Py_ssize_t rows, Py_ssize_t cols,   \
                     Py_ssize_t bins) {                                                               \
        for (Py_ssize_t i = 0; i < batch * (rows / 2); i++) {                                         \
            const CI *upper = (const CI *)in + 2 * i * cols * bins, *lower = upper + cols * bins;     \
            CO *o = (CO *)out + i * (cols / 2) * bins;                                                \
            for (Py_ssize_t c = 0; c < cols / 2; c++, upper += 2 * bins, lower += 2 * bins, o += bins) \
                for (Py_ssize_t k = 0; k < bins; k++)                                                 \
                    o[k] = (CO)((CO)upper[k] + (CO)lower[k] + (CO)upper[bins + k] + (CO)lower[bins + k]); \
        }                                                                                             \
    }
MERGE(merge_u8_u8, uint8_t, uint8_t)
MERGE(merge_u8_i16, uint8_t, int16_t)
MERGE(merge_i16_i16, int16_t, int16_t)
MERGE(merge_i16_i32, int16_t, int32_t)
MERGE(merge_i32_i32, int32_t, int32_t)

PyDoc_STRVAR(merge_children_doc,
"merge_children(counts, out)\n--\n\n"
"Fill out (B, R/2, C/2, bins) with the sums of the 2x2 children of counts (B, R, C, bins), both\n"
"C-contiguous; out is as wide as counts or the next width (uint8 -> uint8/int16 -> int16/int32).\n"
"The caller picks a width that holds the sums.");

static PyObject *merge_children(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *in_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OO", &in_obj, &out_obj)) return NULL;
    Py_buffer in, out;
    if (PyObject_GetBuffer(in_obj, &in, PyBUF_RECORDS_RO | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(out_obj, &out, PyBUF_RECORDS | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&in);
        return NULL;
    }
    PyObject *result = NULL;
    int wi = count_width(&in), wo = count_width(&out);
    void (*merge)(const char *, char *, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t) =
        wi == 1 && wo == 1 ? merge_u8_u8 : wi == 1 && wo == 2 ? merge_u8_i16 : wi == 2 && wo == 2 ? merge_i16_i16
        : wi == 2 && wo == 4 ? merge_i16_i32 : wi == 4 && wo == 4 ? merge_i32_i32 : NULL;
    if (!merge || in.ndim != 4 || out.ndim != 4 || out.shape[0] != in.shape[0] || out.shape[1] * 2 != in.shape[1]
        || out.shape[2] * 2 != in.shape[2] || out.shape[3] != in.shape[3]) {
        PyErr_SetString(PyExc_ValueError,
                        "merge_children: out must be (B, R/2, C/2, bins) of counts (B, R, C, bins), as wide or one wider");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    merge(in.buf, out.buf, in.shape[0], in.shape[1], in.shape[2], in.shape[3]);
    Py_END_ALLOW_THREADS
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&in);
    PyBuffer_Release(&out);
    return result;
}

/* --- 3. entropy terms --------------------------------------------------------------------------- */

/* out[i] = table[counts[i]]. Most counts are zero (a cell's levels span a few dozen of the bins) and
 * table[0] is the term of a zero count: the counts are read 8 bytes at a time, and a word of zeros
 * is written without a lookup. Returns whether a count lay outside the table (its term is then
 * table[0], and the caller raises). */
#define LOOKUP(NAME, C)                                                                               \
    static int NAME(const char *counts, const float *table, size_t size, float *out, Py_ssize_t n) { \
        const C *c = (const C *)counts;                                                               \
        const Py_ssize_t group = 8 / (Py_ssize_t)sizeof(C);                                           \
        const float zero = table[0];                                                                  \
        int bad = 0;                                                                                  \
        Py_ssize_t i = 0;                                                                             \
        for (; i + group <= n; i += group) {                                                          \
            uint64_t word;                                                                            \
            memcpy(&word, c + i, sizeof word);                                                        \
            if (!word) {                                                                              \
                for (Py_ssize_t j = i; j < i + group; j++) out[j] = zero;                             \
                continue;                                                                             \
            }                                                                                         \
            for (Py_ssize_t j = i; j < i + group; j++) {                                              \
                size_t k = (size_t)c[j]; /* a negative count wraps to a huge index: out of the table */ \
                bad |= k >= size;                                                                     \
                out[j] = table[k < size ? k : 0];                                                     \
            }                                                                                         \
        }                                                                                             \
        for (; i < n; i++) {                                                                          \
            size_t k = (size_t)c[i];                                                                  \
            bad |= k >= size;                                                                         \
            out[i] = table[k < size ? k : 0];                                                         \
        }                                                                                             \
        return bad;                                                                                   \
    }
LOOKUP(lookup_u8, uint8_t)
LOOKUP(lookup_i16, int16_t)
LOOKUP(lookup_i32, int32_t)

PyDoc_STRVAR(lookup_doc,
"lookup(counts, table, out)\n--\n\n"
"out[i] = table[counts[i]] for C-contiguous counts (uint8/int16/int32), a float32 table and a float32\n"
"out of as many elements as counts. Raises ValueError when a count is outside the table.");

static PyObject *lookup(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *counts_obj, *table_obj, *out_obj;
    if (!PyArg_ParseTuple(args, "OOO", &counts_obj, &table_obj, &out_obj)) return NULL;
    Py_buffer c, t, o;
    if (PyObject_GetBuffer(counts_obj, &c, PyBUF_RECORDS_RO | PyBUF_C_CONTIGUOUS) < 0) return NULL;
    if (PyObject_GetBuffer(table_obj, &t, PyBUF_RECORDS_RO | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&c);
        return NULL;
    }
    if (PyObject_GetBuffer(out_obj, &o, PyBUF_RECORDS | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(&c);
        PyBuffer_Release(&t);
        return NULL;
    }
    PyObject *result = NULL;
    int width_bytes = count_width(&c);
    Py_ssize_t n = width_bytes ? c.len / width_bytes : 0, size = t.len / 4;
    if (!width_bytes || strcmp(format_of(&t), "f") || t.itemsize != 4 || strcmp(format_of(&o), "f")
        || o.itemsize != 4 || o.len / 4 != n || size < 1) {
        PyErr_SetString(PyExc_ValueError,
                        "lookup: counts uint8/int16/int32, a float32 table and a float32 out of as many elements");
        goto done;
    }
    int bad;
    Py_BEGIN_ALLOW_THREADS
    bad = (width_bytes == 1 ? lookup_u8 : width_bytes == 2 ? lookup_i16 : lookup_i32)(c.buf, t.buf, (size_t)size,
                                                                                    o.buf, n);
    Py_END_ALLOW_THREADS
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "lookup: a count is outside the table");
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    PyBuffer_Release(&c);
    PyBuffer_Release(&t);
    PyBuffer_Release(&o);
    return result;
}

/* --- module ------------------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"base_counts", base_counts, METH_VARARGS, base_counts_doc},
    {"merge_children", merge_children, METH_VARARGS, merge_children_doc},
    {"lookup", lookup, METH_VARARGS, lookup_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cellhist", "The CPU kernel of the entropy scorer's histograms (see _cellhist.c).",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cellhist(void) { return PyModule_Create(&module); }
