/* common/yaml.h — a reader for the YAML subset kubeconfigs are written in, into jansson.
 * Owns: turning YAML text (block mappings and sequences, plain, quoted and block scalars,
 * flow collections, JSON) into a json_t tree. Does not own: what the tree means
 * (common/kubeconfig.c walks it), writing YAML, the rest of YAML 1.2.
 * Why not libyaml: one more dependency for a few hundred lines of a small, bounded subset.
 * What kubeconfigs never need is refused with the line, not guessed: anchors, aliases,
 * tags, directives, several documents, complex keys, tabs in indentation.
 * Safe on any input (it is fuzzed): bounded size and depth, no read past 'len'. */
#ifndef SW_COMMON_YAML_H
#define SW_COMMON_YAML_H
#include <stddef.h>

#include <jansson.h>

#define YML_MAX_BYTES (4u << 20) /* larger input is refused unread */
#define YML_MAX_DEPTH 64         /* collections nested deeper are refused */

typedef struct yml_error {
    int line;       /* 1-based line the error is on */
    char msg[160];  /* "line 3: tab character in indentation"; never quotes the input */
} yml_error;

/* Parse 'len' bytes of YAML (need not be NUL-terminated) into a new tree: mappings become
 * objects, sequences arrays, plain true/false booleans, plain null/~ and empty values null,
 * every other scalar a string (numbers too). Caller releases with json_decref(). NULL with
 * 'e' filled (may be NULL) on any error; the message always names the line. */
json_t *yml_load(const char *text, size_t len, yml_error *e);

#endif
