/* tests/fuzz/fuzz.h — what every libFuzzer harness in tests/fuzz/ shares: the entry point's
 * prototype and CHECK(), which turns a broken invariant into a crash libFuzzer records (the
 * sanitizers catch memory errors and undefined behaviour on their own).
 * Build and run: `make fuzz` (FUZZ_SECONDS each) or `make fuzz-ci` (20 s each);
 * docs/reliability.md, "Fuzzing". */
#ifndef SW_TESTS_FUZZ_H
#define SW_TESTS_FUZZ_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort with the file, line and the broken condition. */
#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                   \
        }                                                                              \
    } while (0)

/* A NUL-terminated copy of data[0..size) (caller frees), for the C-string APIs. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) abort();
    for (size_t i = 0; i < size; i++) s[i] = (char)data[i];
    s[size] = '\0';
    return s;
}

#endif
