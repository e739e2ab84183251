// ik-splice-types: ik_llama.cpp's own view of types and files, from its ggml (built by
// fixtures/build-ik-llama.sh against ik's libggml; compared with ours by tests/ik_llama.rs).
//
//   ik-splice-types
//     one line per type id that ik defines:
//     id name blck type_size row_meta row_size(4 blocks) nbytes([2 blocks, 16, 3])
//     (type_traits through ggml_blck_size / ggml_type_size / ggml_row_size / ggml_nbytes;
//     row_meta = ggml_row_size(t, blck) - type_size: the bytes a row carries before its
//     blocks; nbytes is a real 3-D ggml tensor's, 16 rows: a multiple of every interleave)
//
//   ik-splice-types FILE.gguf
//     ik's gguf reader on FILE: "data_offset N", then one line per tensor:
//     name type_id type_name n_dims ne0 ne1 ne2 ne3 absolute_offset nbytes
#include "ggml.h"

#include <stdio.h>
#include <string.h>

static int print_types(void) {
    struct ggml_init_params params = {
        /*.mem_size   =*/ 1024 * 1024,
        /*.mem_buffer =*/ NULL,
        /*.no_alloc   =*/ true,
    };
    struct ggml_context * ctx = ggml_init(params);
    if (!ctx) {
        fprintf(stderr, "ggml_init failed\n");
        return 1;
    }
    for (int id = 0; id < GGML_TYPE_COUNT; id++) {
        const enum ggml_type t = (enum ggml_type) id;
        const char * name = ggml_type_name(t);
        const int64_t blck = ggml_blck_size(t);
        if (name == NULL || blck <= 0) {
            continue;
        }
        const size_t ts = ggml_type_size(t);
        const size_t meta = ggml_row_size(t, blck) - ts;
        const size_t row4 = ggml_row_size(t, 4 * blck);
        struct ggml_tensor * x = ggml_new_tensor_3d(ctx, t, 2 * blck, 16, 3);
        printf("%d %s %lld %zu %zu %zu %zu\n", id, name, (long long) blck, ts, meta, row4, ggml_nbytes(x));
    }
    ggml_free(ctx);
    return 0;
}

static int print_file(const char * path) {
    struct ggml_context * meta = NULL;
    struct gguf_init_params params = {
        /*.no_alloc =*/ true,
        /*.ctx      =*/ &meta,
    };
    struct gguf_context * g = gguf_init_from_file(path, params);
    if (!g) {
        fprintf(stderr, "gguf_init_from_file failed on %s\n", path);
        return 1;
    }
    const size_t data = gguf_get_data_offset(g);
    printf("data_offset %zu\n", data);
    for (int i = 0; i < gguf_get_n_tensors(g); i++) {
        const char * name = gguf_get_tensor_name(g, i);
        const struct ggml_tensor * t = ggml_get_tensor(meta, name);
        if (!t) {
            fprintf(stderr, "no tensor %s in the context\n", name);
            return 1;
        }
        printf("%s %d %s %d %lld %lld %lld %lld %zu %zu\n", name, (int) gguf_get_tensor_type(g, i),
               ggml_type_name(t->type), ggml_n_dims(t), (long long) t->ne[0], (long long) t->ne[1],
               (long long) t->ne[2], (long long) t->ne[3], data + gguf_get_tensor_offset(g, i),
               ggml_nbytes(t));
    }
    gguf_free(g);
    ggml_free(meta);
    return 0;
}

int main(int argc, char ** argv) {
    if (argc == 1) {
        return print_types();
    }
    if (argc == 2 && strcmp(argv[1], "--help") != 0) {
        return print_file(argv[1]);
    }
    fprintf(stderr, "usage: %s [FILE.gguf]\n", argv[0]);
    return 2;
}
