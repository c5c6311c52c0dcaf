/* tests/unit/test_yaml.c — the kubeconfig YAML subset (common/yaml.h): what kubectl writes,
 * scalars and escapes, flow collections and JSON, and what is refused (with its line):
 * tabs, anchors, tags, several documents, depth, size. Every prefix of a sample document is
 * parsed too, so truncated input never crashes. Runs from the repository root. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xmalloc.h"
#include "common/yaml.h"

static json_t *load(const char *text)
{
    yml_error e;
    json_t *j = yml_load(text, strlen(text), &e);
    if (!j) fail_msg("unexpected error: %s", e.msg);
    return j;
}

/* The error message for 'text', which must be refused on 'line'. */
static void refused(const char *text, int line, const char *needle)
{
    yml_error e;
    json_t *j = yml_load(text, strlen(text), &e);
    if (j) {
        char *s = json_dumps(j, JSON_ENCODE_ANY);
        fail_msg("accepted, gave %s", s);
    }
    char want[32];
    snprintf(want, sizeof want, "line %d: ", line);
    if (strncmp(e.msg, want, strlen(want)) || e.line != line || !strstr(e.msg, needle))
        fail_msg("got '%s' (line %d), want line %d and '%s'", e.msg, e.line, line, needle);
}

static const char *str_at(json_t *j, const char *path)
{
    /* "a.b.0.c": object keys and array indexes */
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *v = j;
    for (char *save = NULL, *p = strtok_r(buf, ".", &save); p; p = strtok_r(NULL, ".", &save))
        v = json_is_array(v) ? json_array_get(v, strtoul(p, NULL, 10)) : json_object_get(v, p);
    if (!json_is_string(v)) fail_msg("%s is not a string", path);
    return json_string_value(v);
}

static void lists_at_the_parent_key_indent_as_kubectl_writes_them(void **state)
{
    (void)state;
    json_t *j = load("apiVersion: v1\n"
                     "clusters:\n"
                     "- cluster:\n"
                     "    server: https://127.0.0.1:6443\n"
                     "  name: kind-kind\n"
                     "- name: second\n"
                     "  cluster:\n"
                     "    insecure-skip-tls-verify: true\n"
                     "contexts:\n"
                     "- context:\n"
                     "    cluster: kind-kind\n"
                     "  name: kind-kind\n"
                     "current-context: kind-kind\n"
                     "preferences: {}\n"
                     "extensions: []\n");
    assert_string_equal(str_at(j, "clusters.0.cluster.server"), "https://127.0.0.1:6443");
    assert_string_equal(str_at(j, "clusters.0.name"), "kind-kind");
    assert_string_equal(str_at(j, "clusters.1.name"), "second");
    assert_true(json_is_true(json_object_get(
        json_object_get(json_array_get(json_object_get(j, "clusters"), 1), "cluster"),
        "insecure-skip-tls-verify")));
    assert_string_equal(str_at(j, "contexts.0.context.cluster"), "kind-kind");
    assert_string_equal(str_at(j, "current-context"), "kind-kind");
    assert_int_equal(json_object_size(json_object_get(j, "preferences")), 0);
    assert_true(json_is_array(json_object_get(j, "extensions")));
    assert_int_equal(json_array_size(json_object_get(j, "extensions")), 0);
    json_decref(j);
}

static void indented_lists_and_nested_sequences_work_too(void **state)
{
    (void)state;
    json_t *j = load("a:\n"
                     "    - x\n"
                     "    -   k: 1\n"
                     "        l: 2\n"
                     "    - - n1\n"
                     "      - n2\n"
                     "    -\n"
                     "      deep: yes\n"
                     "    -\n"
                     "b: end\n");
    assert_string_equal(str_at(j, "a.0"), "x");
    assert_string_equal(str_at(j, "a.1.k"), "1");
    assert_string_equal(str_at(j, "a.1.l"), "2");
    assert_string_equal(str_at(j, "a.2.1"), "n2");
    assert_string_equal(str_at(j, "a.3.deep"), "yes");
    assert_true(json_is_null(json_array_get(json_object_get(j, "a"), 4)));
    assert_string_equal(str_at(j, "b"), "end");
    json_decref(j);
}

static void scalars_stay_strings_except_booleans_and_nulls(void **state)
{
    (void)state;
    json_t *j = load("t: true\nf: False\nn: null\ntilde: ~\nempty:\nnum: 6443\nneg: -1\n"
                     "ver: 1.30\nq: 'true'\nurl: https://h:1/p?x=y#frag\n"
                     "pem: -----BEGIN CERTIFICATE-----\n");
    assert_true(json_is_true(json_object_get(j, "t")));
    assert_true(json_is_false(json_object_get(j, "f")));
    assert_true(json_is_null(json_object_get(j, "n")));
    assert_true(json_is_null(json_object_get(j, "tilde")));
    assert_true(json_is_null(json_object_get(j, "empty")));
    assert_string_equal(str_at(j, "num"), "6443");
    assert_string_equal(str_at(j, "neg"), "-1");
    assert_string_equal(str_at(j, "ver"), "1.30");
    assert_string_equal(str_at(j, "q"), "true");
    assert_string_equal(str_at(j, "url"), "https://h:1/p?x=y#frag");
    assert_string_equal(str_at(j, "pem"), "-----BEGIN CERTIFICATE-----");
    json_decref(j);
}

static void quoted_scalars_decode_their_escapes(void **state)
{
    (void)state;
    json_t *j = load("d: \"tab\\there \\\"q\\\" back\\\\slash\\n\\u00e9\\x41\\U0001F600\"\n"
                     "pair: \"\\ud83d\\ude00\"\n"
                     "s: 'it''s \\n raw'\n"
                     "\"quoted key\": 1\n"
                     "'single key' : 2\n"
                     "hash: \"a # not a comment\"\n"
                     "folded: \"one\n   two\n\n   three\"\n"
                     "joined: \"abc\\\n    def\"\n");
    assert_string_equal(str_at(j, "d"), "tab\there \"q\" back\\slash\n\xc3\xa9" "A\xf0\x9f\x98\x80");
    assert_string_equal(str_at(j, "pair"), "\xf0\x9f\x98\x80");
    assert_string_equal(str_at(j, "s"), "it's \\n raw");
    assert_string_equal(str_at(j, "quoted key"), "1");
    assert_string_equal(str_at(j, "single key"), "2");
    assert_string_equal(str_at(j, "hash"), "a # not a comment");
    assert_string_equal(str_at(j, "folded"), "one two\nthree");
    assert_string_equal(str_at(j, "joined"), "abcdef");
    json_decref(j);
}

static void bad_escapes_are_refused_with_their_line(void **state)
{
    (void)state;
    refused("a: 1\nb: \"\\q\"\n", 2, "unknown escape");
    refused("a: \"\\u12\"\n", 1, "hex digits");
    refused("a: \"\\ud800\"\n", 1, "code point");
    refused("a: \"\\ud800\\u0041\"\n", 1, "surrogate");
    refused("a: \"\\0\"\n", 1, "NUL");
    refused("a: \"\\u0000\"\n", 1, "NUL");
    refused("a: 1\nb: \"never closed\nc: 2\n", 2, "unterminated");
    refused("a: 'x' trailing\n", 1, "unexpected text");
}

static void comments_are_skipped_everywhere(void **state)
{
    (void)state;
    json_t *j = load("# head\n"
                     "---   # start\n"
                     "a: 1 # trailing\n"
                     "   # indented comment\n"
                     "b:   # value on the next lines\n"
                     "  # between\n"
                     "  - x#not-a-comment\n"
                     "  # between items\n"
                     "  - [y, # in flow\n"
                     "     z]\n"
                     "c: {k: v} # after flow\n"
                     "...\n"
                     "# tail\n");
    assert_string_equal(str_at(j, "a"), "1");
    assert_string_equal(str_at(j, "b.0"), "x#not-a-comment");
    assert_string_equal(str_at(j, "b.1.1"), "z");
    assert_string_equal(str_at(j, "c.k"), "v");
    json_decref(j);
}

static void block_scalars_literal_and_folded(void **state)
{
    (void)state;
    json_t *j = load("lit: |\n  l1\n    l2\n\n  l3\n"
                     "strip: |-\n  x\n\n"
                     "keep: |+\n  y\n\n"
                     "ind: |2\n    four\n  two\n"
                     "fold: >\n  a\n  b\n\n  c\n    more\n  d\n"
                     "empty: |\n"
                     "after: ok\n");
    assert_string_equal(str_at(j, "lit"), "l1\n  l2\n\nl3\n");
    assert_string_equal(str_at(j, "strip"), "x");
    assert_string_equal(str_at(j, "keep"), "y\n\n");
    assert_string_equal(str_at(j, "ind"), "  four\ntwo\n");
    assert_string_equal(str_at(j, "fold"), "a b\nc\n  more\nd\n");
    assert_string_equal(str_at(j, "empty"), "");
    assert_string_equal(str_at(j, "after"), "ok");
    json_decref(j);
}

static void plain_scalars_continue_on_deeper_lines(void **state)
{
    (void)state;
    json_t *j = load("hint: Install the plugin\n  by following the guide\n\n  at the URL\n"
                     "list:\n- first item\n  continued\n- second\n");
    assert_string_equal(str_at(j, "hint"), "Install the plugin by following the guide\nat the URL");
    assert_string_equal(str_at(j, "list.0"), "first item continued");
    assert_string_equal(str_at(j, "list.1"), "second");
    json_decref(j);
    refused("a: b\n  c: d\n", 2, "': '");
    refused("a: b: c\n", 1, "': '");
}

static void flow_collections_and_json(void **state)
{
    (void)state;
    json_t *j = load("{\n\t\"kind\": \"Config\",\n\t\"n\": 1, \"b\": true, \"z\": null,\n"
                     "\t\"list\": [ {\"a\":\"b\"}, [], {}, \"x\\/y\" ],\n"
                     "\t\"s\": \"\\u00e9\"\n}\n");
    assert_string_equal(str_at(j, "kind"), "Config");
    assert_string_equal(str_at(j, "n"), "1");
    assert_true(json_is_true(json_object_get(j, "b")));
    assert_true(json_is_null(json_object_get(j, "z")));
    assert_string_equal(str_at(j, "list.0.a"), "b");
    assert_string_equal(str_at(j, "list.3"), "x/y");
    assert_string_equal(str_at(j, "s"), "\xc3\xa9");
    json_decref(j);

    j = load("m: {a: 1, b, 'c': [x, y z, ], d: }\n");
    assert_string_equal(str_at(j, "m.a"), "1");
    assert_true(json_is_null(json_object_get(json_object_get(j, "m"), "b")));
    assert_string_equal(str_at(j, "m.c.1"), "y z");
    assert_true(json_is_null(json_object_get(json_object_get(j, "m"), "d")));
    json_decref(j);

    refused("a: [1, 2\n", 1, "unterminated flow sequence");
    refused("a:\n  [1, [2,\n\n", 2, "unterminated flow sequence");
    refused("a: {x: 1\n", 1, "unterminated flow mapping");
    refused("a: {x: \n", 1, "unterminated flow mapping");
    refused("a: [1, 2\nb: 3\n", 2, "expected ','");
    refused("a: [x: 1]\n", 1, "flow sequences");
    refused("a: [1 2 3, ]\nb: [a\n  b]\n", 3, "expected ','");
    refused("a: [,]\n", 1, "unexpected ','");
}

static void crlf_line_endings_and_a_bom_are_accepted(void **state)
{
    (void)state;
    json_t *j = load("\xEF\xBB\xBF" "a: 1\r\nb:\r\n- x\r\n- \"y\"\r\nc: |\r\n  l\r\n");
    assert_string_equal(str_at(j, "a"), "1");
    assert_string_equal(str_at(j, "b.1"), "y");
    assert_string_equal(str_at(j, "c"), "l\n");
    json_decref(j);
}

static void empty_documents_are_null(void **state)
{
    (void)state;
    const char *docs[] = {"", "\n\n", "# only a comment\n", "---\n", "--- # c\n...\n", "...\n"};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++) {
        json_t *j = load(docs[i]);
        assert_true(json_is_null(j));
        json_decref(j);
    }
}

static void tabs_in_indentation_are_refused_with_the_line(void **state)
{
    (void)state;
    refused("a:\n\tb: 1\n", 2, "tab character in indentation");
    refused("a:\n  b: 1\n  \tc: 2\n", 3, "tab");
    refused("l:\n- a\n\t- b\n", 3, "tab");
    /* tabs as separators and in blank lines are fine */
    json_t *j = load("a:\tb\n\t\nc: [1,\t2]\n");
    assert_string_equal(str_at(j, "a"), "b");
    json_decref(j);
}

static void anchors_aliases_tags_and_merge_keys_are_refused(void **state)
{
    (void)state;
    refused("a: &x 1\n", 1, "anchors");
    refused("a: 1\nb: *x\n", 2, "aliases");
    refused("a:\n  - !!str 1\n", 2, "tags");
    refused("a:\n  <<: {b: 1}\n", 2, "merge keys");
    refused("x: [*a]\n", 1, "aliases");
    refused("? complex\n: v\n", 1, "complex keys");
    refused("%YAML 1.2\n---\na: 1\n", 1, "directives");
}

static void several_documents_are_refused(void **state)
{
    (void)state;
    refused("a: 1\n---\nb: 2\n", 2, "several documents");
    refused("---\na: 1\n---\n", 3, "several documents");
    refused("a: 1\n...\nb: 2\n", 3, "several documents");
    refused("--- a: 1\n", 1, "'---' line");
}

static void structure_errors_name_their_line(void **state)
{
    (void)state;
    refused("a: 1\nb: 2\na: 3\n", 3, "duplicate key");
    refused("a: \"x\"\n   b: 1\n", 2, "unexpected indentation");
    refused("a:\n  b: 1\n c: 2\n", 3, "unexpected indentation");
    refused("  a: 1\nb: 2\n", 2, "indentation matches no open block");
    refused("- a\nb: 1\n", 2, "indentation matches no open block");
    refused("a: 1\n- b\n", 2, "sequence item where a key was expected");
    refused("a: |x\n", 1, "unexpected text");
    refused("a: [1, 2]]\n", 1, "unexpected text");
    refused("a: @x\n", 1, "cannot start with '@'");
}

static void nesting_deeper_than_the_limit_is_refused(void **state)
{
    (void)state;
    char *flow = xcalloc(1, 4 * YML_MAX_DEPTH + 16);
    size_t n = 0;
    for (int i = 0; i < YML_MAX_DEPTH; i++) flow[n++] = '[';
    for (int i = 0; i < YML_MAX_DEPTH; i++) flow[n++] = ']';
    json_t *j = load(flow); /* exactly the limit: fine */
    json_decref(j);
    memmove(flow + 1, flow, n + 1);
    flow[0] = '[';
    flow[n + 1] = ']';
    refused(flow, 1, "nesting deeper than 64");
    free(flow);

    size_t cap = (YML_MAX_DEPTH + 2) * (2 * YML_MAX_DEPTH + 8);
    char *block = xcalloc(1, cap);
    n = 0;
    for (int d = 0; d <= YML_MAX_DEPTH; d++)
        n += (size_t)snprintf(block + n, cap - n, "%*sk:\n", 2 * d, "");
    refused(block, YML_MAX_DEPTH + 1, "nesting deeper");
    n = 0;
    for (int d = 0; d <= YML_MAX_DEPTH; d++) n += (size_t)snprintf(block + n, cap - n, "- ");
    snprintf(block + n, cap - n, "x\n");
    refused(block, 1, "nesting deeper");
    free(block);
}

static void oversized_input_and_nul_bytes_are_refused(void **state)
{
    (void)state;
    yml_error e;
    assert_null(yml_load("a: 1", (size_t)YML_MAX_BYTES + 1, &e)); /* refused before reading */
    assert_non_null(strstr(e.msg, "over the 4 MiB limit"));
    assert_non_null(strstr(e.msg, "line "));
    assert_null(yml_load("a: 1\nb: \0\n", 10, &e));
    assert_int_equal(e.line, 2);
    assert_non_null(strstr(e.msg, "NUL"));
    assert_null(yml_load("a: \"\xff\"\n", 7, &e));
    assert_non_null(strstr(e.msg, "UTF-8"));
}

/* A document touching every construct; every prefix (and every one-byte corruption) must
 * either parse or give an error with a line, never crash or read past the end (ASan). */
static const char sample[] =
    "apiVersion: v1\r\n"
    "clusters:\n"
    "- cluster:\n"
    "    certificate-authority-data: TFMwdExTMUNSVWRKVGlC\n"
    "    server: \"https://[fd00::1]:6443\"\n"
    "  name: 'kind-''x'''\n"
    "contexts:\n"
    "  - {name: c, context: {cluster: kind, user: \"u\\u00e9\\t\"}}  # flow\n"
    "current-context: c\n"
    "preferences: {}\n"
    "users:\n"
    "- name: u\n"
    "  user:\n"
    "    exec:\n"
    "      args: [--region, eu-west-1]\n"
    "      installHint: |\n"
    "        line one\n"
    "          two\n"
    "      hint2: >-\n"
    "        folded\n"
    "        text\n"
    "      nested:\n"
    "      - - a\n"
    "        - b\n"
    "    token: plain value\n"
    "      continued\n"
    "    t: true\n"
    "...\n";

static void every_prefix_and_corruption_of_a_sample_is_safe(void **state)
{
    (void)state;
    size_t len = sizeof sample - 1;
    for (size_t n = 0; n <= len; n++) {
        char *copy = xmalloc(n ? n : 1); /* exact size: ASan sees any over-read */
        memcpy(copy, sample, n);
        yml_error e;
        json_t *j = yml_load(copy, n, &e);
        if (!j) assert_non_null(strstr(e.msg, "line "));
        json_decref(j);
        free(copy);
    }
    const char subst[] = "\t\n\r\"'\\:-#[]{}|>&*!,? x";
    for (size_t n = 0; n < len; n++) {
        for (size_t k = 0; k < sizeof subst - 1; k++) {
            char *copy = xmalloc(len);
            memcpy(copy, sample, len);
            copy[n] = subst[k];
            yml_error e;
            json_t *j = yml_load(copy, len, &e);
            if (!j) assert_non_null(strstr(e.msg, "line "));
            json_decref(j);
            free(copy);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lists_at_the_parent_key_indent_as_kubectl_writes_them),
        cmocka_unit_test(indented_lists_and_nested_sequences_work_too),
        cmocka_unit_test(scalars_stay_strings_except_booleans_and_nulls),
        cmocka_unit_test(quoted_scalars_decode_their_escapes),
        cmocka_unit_test(bad_escapes_are_refused_with_their_line),
        cmocka_unit_test(comments_are_skipped_everywhere),
        cmocka_unit_test(block_scalars_literal_and_folded),
        cmocka_unit_test(plain_scalars_continue_on_deeper_lines),
        cmocka_unit_test(flow_collections_and_json),
        cmocka_unit_test(crlf_line_endings_and_a_bom_are_accepted),
        cmocka_unit_test(empty_documents_are_null),
        cmocka_unit_test(tabs_in_indentation_are_refused_with_the_line),
        cmocka_unit_test(anchors_aliases_tags_and_merge_keys_are_refused),
        cmocka_unit_test(several_documents_are_refused),
        cmocka_unit_test(structure_errors_name_their_line),
        cmocka_unit_test(nesting_deeper_than_the_limit_is_refused),
        cmocka_unit_test(oversized_input_and_nul_bytes_are_refused),
        cmocka_unit_test(every_prefix_and_corruption_of_a_sample_is_safe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
