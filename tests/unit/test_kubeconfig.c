/* tests/unit/test_kubeconfig.c — credentials (common/kubeconfig.h): kubeconfigs as kubectl
 * writes them (fixtures under tests/unit/fixtures/kube/), what is refused and how it is
 * said, relative paths, the KUBECONFIG list, the in-cluster fallback from a temp
 * service-account folder, and that no message ever holds a token or key. No network.
 * Runs from the repository root so the fixtures are found by relative path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/kubeconfig.h"
#include "common/xmalloc.h"

#define FIX "tests/unit/fixtures/kube/"
#define TOKEN "TEST-TOKEN-SECRET-91c2"
#define KEY_TEXT "TEST-KEY-SECRET-MATERIAL-7f3a"
#define CA_PEM "-----BEGIN CERTIFICATE-----\nTEST-CA-NOT-A-REAL-CERTIFICATE\n-----END CERTIFICATE-----\n"
#define CERT_PEM "-----BEGIN CERTIFICATE-----\nTEST-CLIENT-CERT-NOT-REAL\n-----END CERTIFICATE-----\n"
#define KEY_PEM "-----BEGIN RSA PRIVATE KEY-----\n" KEY_TEXT "\n-----END RSA PRIVATE KEY-----\n"
#define CA_B64 "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tClRFU1QtQ0EtTk9ULUEtUkVBTC1DRVJUSUZJQ0FURQotLS0tLUVORCBDRVJUSUZJQ0FURS0tLS0tCg=="
#define KEY_B64 "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQpURVNULUtFWS1TRUNSRVQtTUFURVJJQUwtN2YzYQotLS0tLUVORCBSU0EgUFJJVkFURSBLRVktLS0tLQo="

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    char *buf = xmalloc(1 << 16);
    size_t n = fread(buf, 1, (1 << 16) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* 'text' with the first 'from' replaced by 'to'; caller frees. */
static char *replace(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    if (!at) fail_msg("'%s' not in the text", from);
    return xasprintf("%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
}

/* A message must never carry secret material from the fixtures. */
static void no_secret_in(const char *msg)
{
    const char *secrets[] = {TOKEN, KEY_TEXT, KEY_B64, "REVG", "c2VjcmV0", "hunter2", NULL};
    for (int i = 0; secrets[i]; i++)
        if (strstr(msg, secrets[i])) fail_msg("message holds a secret: %s", msg);
}

static void ok(const char *text, const char *base, k8s_creds *cr)
{
    sw_err err = {0};
    if (kubeconfig_parse(text, strlen(text), base, "KUBECONFIG /t/config", cr, &err) != 0)
        fail_msg("unexpected error: %s", err.msg);
}

/* 'text' must be refused (backend_error, not retryable) with 'needle' in the message. */
static void refused(const char *text, const char *needle)
{
    sw_err err = {0};
    k8s_creds cr;
    assert_int_equal(kubeconfig_parse(text, strlen(text), "/t", "KUBECONFIG /t/config", &cr, &err),
                     -1);
    assert_int_equal(err.code, SW_E_BACKEND);
    assert_false(err.retryable);
    if (!strstr(err.msg, needle)) fail_msg("got '%s', want '%s'", err.msg, needle);
    assert_non_null(strstr(err.msg, "KUBECONFIG /t/config: "));
    no_secret_in(err.msg);
    assert_null(cr.server); /* nothing left allocated */
    assert_null(cr.token);
}

/* A minimal valid kubeconfig with 'user' as the user's body (indented 4). */
static char *with_user(const char *user)
{
    return xasprintf("clusters:\n- name: c\n  cluster:\n    server: https://h:6443\n"
                     "contexts:\n- name: x\n  context: {cluster: c, user: u}\n"
                     "current-context: x\nusers:\n- name: u\n  user:\n%s", user);
}

static char *with_cluster(const char *cluster)
{
    return xasprintf("clusters:\n- name: c\n  cluster:\n%s"
                     "contexts:\n- name: x\n  context: {cluster: c}\ncurrent-context: x\n",
                     cluster);
}

/* ------------------------------------------------------------------ kubeconfig_parse */

static void kind_kubeconfig_gives_server_ca_and_client_certificate(void **state)
{
    (void)state;
    char *text = slurp(FIX "kind.yaml");
    k8s_creds cr;
    ok(text, "/home/u/.kube", &cr);
    assert_string_equal(cr.server, "https://127.0.0.1:41234");
    assert_int_equal(cr.ca_len, strlen(CA_PEM));
    assert_memory_equal(cr.ca_pem, CA_PEM, cr.ca_len);
    assert_null(cr.ca_file);
    assert_false(cr.insecure);
    assert_int_equal(cr.cert_len, strlen(CERT_PEM));
    assert_memory_equal(cr.cert_pem, CERT_PEM, cr.cert_len);
    assert_int_equal(cr.key_len, strlen(KEY_PEM));
    assert_memory_equal(cr.key_pem, KEY_PEM, cr.key_len);
    assert_null(cr.token);
    assert_null(cr.token_file);
    assert_null(cr.namespace_);
    assert_string_equal(cr.source, "KUBECONFIG /t/config (context kind-kind)");
    k8s_creds_free(&cr);
    assert_null(cr.key_pem); /* freed and zeroed */
    k8s_creds_free(&cr);     /* twice is harmless */
    k8s_creds_free(NULL);
    free(text);
}

static void another_context_gives_its_token_namespace_and_insecure_flag(void **state)
{
    (void)state;
    char *text = slurp(FIX "kind.yaml");
    char *other = replace(text, "current-context: kind-kind", "current-context: other");
    k8s_creds cr;
    ok(other, "/t", &cr);
    assert_string_equal(cr.server, "https://10.0.0.9:6443"); /* trailing slash dropped */
    assert_true(cr.insecure);
    assert_null(cr.ca_pem);
    assert_string_equal(cr.token, TOKEN);
    assert_null(cr.cert_pem);
    assert_string_equal(cr.namespace_, "team-a");
    k8s_creds_free(&cr);
    free(other);
    free(text);
}

static void eks_exec_plugin_is_refused_naming_the_command(void **state)
{
    (void)state;
    char *text = slurp(FIX "eks.yaml");
    refused(text, "uses an exec credential plugin (command 'aws'), which snapworker does not "
                  "run; use a service-account token or a client certificate");
    free(text);
}

static void auth_providers_basic_auth_and_impersonation_are_refused(void **state)
{
    (void)state;
    char *t = with_user("    auth-provider:\n      name: oidc\n      config: {id-token: c2VjcmV0}\n");
    refused(t, "uses an auth-provider ('oidc')");
    free(t);
    t = with_user("    username: admin\n    password: hunter2\n");
    refused(t, "basic authentication (username/password)");
    free(t);
    t = with_user("    token: " TOKEN "\n    as: someone-else\n");
    refused(t, "impersonation");
    free(t);
}

static void hand_written_paths_resolve_against_the_kubeconfig_folder(void **state)
{
    (void)state;
    char *text = slurp(FIX "files.yaml");
    k8s_creds cr;
    ok(text, "/etc/kube", &cr);
    assert_string_equal(cr.server, "https://k8s.example.test:8443");
    assert_string_equal(cr.ca_file, "/etc/kube/ca.pem");
    assert_null(cr.ca_pem);
    assert_string_equal(cr.tls_server_name, "api.internal");
    assert_string_equal(cr.token, TOKEN);                      /* kept: used until the file is read */
    assert_string_equal(cr.token_file, "/etc/kube/secrets/token"); /* and the file wins */
    assert_string_equal(cr.cert_file, "/etc/kube/certs/client.pem");
    assert_string_equal(cr.key_file, "/abs/client-key.pem");  /* absolute: unchanged */
    assert_string_equal(cr.namespace_, "ns-1");
    k8s_creds_free(&cr);
    ok(text, "/etc/kube/", &cr); /* no double slash */
    assert_string_equal(cr.ca_file, "/etc/kube/ca.pem");
    k8s_creds_free(&cr);
    free(text);
}

static void data_fields_override_their_path_twins(void **state)
{
    (void)state;
    char *t = xasprintf("clusters:\n- name: c\n  cluster:\n    server: https://h\n"
                        "    certificate-authority: /ca.pem\n"
                        "    certificate-authority-data: " CA_B64 "\n"
                        "contexts:\n- name: x\n  context: {cluster: c, user: u}\n"
                        "current-context: x\nusers:\n- name: u\n  user:\n"
                        "    client-certificate: c.pem\n    client-certificate-data: QUJD\n"
                        "    client-key: k.pem\n    client-key-data: " KEY_B64 "\n");
    k8s_creds cr;
    ok(t, "/t", &cr);
    assert_null(cr.ca_file);
    assert_memory_equal(cr.ca_pem, CA_PEM, strlen(CA_PEM));
    assert_null(cr.cert_file);
    assert_int_equal(cr.cert_len, 3);
    assert_string_equal(cr.cert_pem, "ABC");
    assert_null(cr.key_file);
    assert_memory_equal(cr.key_pem, KEY_PEM, strlen(KEY_PEM));
    k8s_creds_free(&cr);
    free(t);
}

static void base64_may_be_wrapped_but_must_be_valid(void **state)
{
    (void)state;
    k8s_creds cr;
    /* a block scalar keeps newlines; a folded plain scalar turns them into spaces */
    char *t = with_cluster("    server: https://h\n    certificate-authority-data: |\n"
                           "      TFMwdExT\n      MUNSVWRK\n");
    ok(t, "/t", &cr);
    assert_int_equal(cr.ca_len, 12);
    assert_memory_equal(cr.ca_pem, "LS0tLS1CRUdJ", 12);
    k8s_creds_free(&cr);
    free(t);
    t = with_cluster("    server: https://h\n    certificate-authority-data: QQ==\n");
    ok(t, "/t", &cr);
    assert_int_equal(cr.ca_len, 1);
    assert_string_equal(cr.ca_pem, "A");
    k8s_creds_free(&cr);
    free(t);
    const char *bad[] = {"QQ", "QQ=", "Q===", "QQ==QQ==", "QU*D", "QUJDR"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *body = xasprintf("    server: https://h\n    certificate-authority-data: %s\n", bad[i]);
        t = with_cluster(body);
        refused(t, "cluster 'c': certificate-authority-data is not valid base64");
        free(t);
        free(body);
    }
}

static void a_certificate_without_a_key_is_refused(void **state)
{
    (void)state;
    char *t = with_user("    client-certificate-data: QUJD\n");
    refused(t, "user 'u' has a client certificate but no client key");
    free(t);
    t = with_user("    client-certificate: /c.pem\n");
    refused(t, "has a client certificate but no client key");
    free(t);
    t = with_user("    client-key-data: " KEY_B64 "\n");
    refused(t, "has a client key but no client certificate");
    free(t);
}

static void broken_references_name_the_context_and_the_missing_piece(void **state)
{
    (void)state;
    char *text = slurp(FIX "kind.yaml"), *t;
    t = replace(text, "current-context: kind-kind\n", "");
    refused(t, "current-context is not set");
    free(t);
    t = replace(text, "current-context: kind-kind", "current-context: nope");
    refused(t, "current-context 'nope' is not defined in 'contexts'");
    free(t);
    t = replace(text, "    cluster: kind-kind\n    user: kind-kind", "    cluster: c1\n    user: kind-kind");
    refused(t, "KUBECONFIG /t/config: context 'kind-kind' names cluster 'c1', which is not defined");
    free(t);
    t = replace(text, "    user: kind-kind\n  name: kind-kind", "    user: ghost\n  name: kind-kind");
    refused(t, "context 'kind-kind' names user 'ghost', which is not defined");
    free(t);
    t = replace(text, "    server: https://127.0.0.1:41234\n", "");
    refused(t, "cluster 'kind-kind' has no server");
    free(t);
    t = replace(text, "    cluster: kind-kind\n    user: kind-kind", "    user: kind-kind");
    refused(t, "context 'kind-kind' has no cluster");
    free(t);
    t = replace(text, "  name: other\ncontexts", "  name: kind-kind\ncontexts");
    refused(t, "'clusters' defines 'kind-kind' twice");
    free(t);
    char *u = replace(text, "    insecure-skip-tls-verify: true", "    insecure-skip-tls-verify: \"yes\"");
    t = replace(u, "current-context: kind-kind", "current-context: other");
    refused(t, "insecure-skip-tls-verify must be true or false");
    free(t);
    free(u);
    free(text);
    refused("", "not a kubeconfig");
    refused("- a\n", "not a kubeconfig");
    refused("current-context: x\ncontexts: {}\n", "'contexts' must be a list");
    refused("current-context: [x]\n", "field 'current-context' must be a string");
    t = with_user("    token: [" TOKEN "]\n");
    refused(t, "user 'u': field 'token' must be a string");
    free(t);
    t = with_cluster("    server: https://h\n    insecure-skip-tls-verify: true\n"
                     "    certificate-authority: /ca.pem\n");
    refused(t, "insecure-skip-tls-verify with a certificate authority is contradictory");
    free(t);
}

static void a_user_less_context_is_anonymous(void **state)
{
    (void)state;
    char *t = with_cluster("    server: https://h:1/\n");
    k8s_creds cr;
    ok(t, NULL, &cr);
    assert_string_equal(cr.server, "https://h:1");
    assert_null(cr.token);
    assert_null(cr.token_file);
    assert_null(cr.cert_pem);
    k8s_creds_free(&cr);
    free(t);
}

static void json_kubeconfig_is_read_like_yaml(void **state)
{
    (void)state;
    char *text = slurp(FIX "kind.json");
    k8s_creds cr;
    ok(text, "/t", &cr);
    assert_string_equal(cr.server, "https://[fd00::1]:6443");
    assert_memory_equal(cr.ca_pem, CA_PEM, strlen(CA_PEM));
    assert_string_equal(cr.token, TOKEN);
    assert_string_equal(cr.namespace_, "json-ns");
    k8s_creds_free(&cr);
    free(text);
}

static void yaml_errors_carry_the_file_and_line_but_no_secret(void **state)
{
    (void)state;
    char *t = with_user("    token: " TOKEN ": oops\n");
    refused(t, "KUBECONFIG /t/config: line 12: ");
    free(t);
    t = with_user("    token: \"" TOKEN "\\q\"\n");
    refused(t, "line 12: unknown escape");
    free(t);
    t = with_user("\ttoken: " TOKEN "\n");
    refused(t, "line 12: tab character in indentation");
    free(t);
    t = with_user("    token: &a " TOKEN "\n");
    refused(t, "line 12: anchors");
    free(t);
    t = with_user("    client-key-data: " KEY_B64 "\n    client-key-data: " KEY_B64 "\n");
    refused(t, "line 13: duplicate key");
    free(t);
    t = with_user("    client-key-data: " KEY_B64 "\n    client-certificate-data: REVG!\n");
    refused(t, "client-certificate-data is not valid base64");
    free(t);
}

/* ------------------------------------------------------------------ k8s_creds_load */

typedef struct tmp {
    char dir[64];
} tmp;

static void tmp_make(tmp *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/sw-kcfg-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
}

static char *tmp_write(const tmp *t, const char *name, const char *text)
{
    char *path = xasprintf("%s/%s", t->dir, name);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return path;
}

static void tmp_remove(const tmp *t, const char *const *names)
{
    for (int i = 0; names[i]; i++) {
        char *p = xasprintf("%s/%s", t->dir, names[i]);
        unlink(p);
        free(p);
    }
    rmdir(t->dir);
}

static void clear_env(void)
{
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    unsetenv("POD_NAMESPACE");
}

static void kubeconfig_list_uses_the_first_file_that_exists(void **state)
{
    (void)state;
    clear_env();
    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1); /* KUBECONFIG wins over in-cluster */
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    tmp t;
    tmp_make(&t);
    char *text = slurp(FIX "files.yaml");
    char *path = tmp_write(&t, "config", text);
    char *list = xasprintf("%s/missing:%s:/nonexistent/other", t.dir, path);
    cfg c = {.kubeconfig = list};
    k8s_creds cr;
    sw_err err = {0};
    assert_int_equal(k8s_creds_load(&c, NULL, &cr, &err), 0);
    char *want = xasprintf("%s/ca.pem", t.dir);
    assert_string_equal(cr.ca_file, want);
    char *src = xasprintf("KUBECONFIG %s (context files)", path);
    assert_string_equal(cr.source, src);
    k8s_creds_free(&cr);

    c.kubeconfig = (char *)"/nonexistent/a:/nonexistent/b";
    assert_int_equal(k8s_creds_load(&c, NULL, &cr, &err), -1);
    assert_int_equal(err.code, SW_E_BACKEND);
    assert_string_equal(err.msg, "KUBECONFIG /nonexistent/a:/nonexistent/b: no such file");

    c.kubeconfig = t.dir; /* a folder */
    assert_int_equal(k8s_creds_load(&c, NULL, &cr, &err), -1);
    assert_non_null(strstr(err.msg, "Is a directory"));

    /* the first existing file is used even when broken: no silent fall-through */
    char *broken = tmp_write(&t, "broken", "current-context: [\n");
    free(list);
    list = xasprintf("%s:%s", broken, path);
    c.kubeconfig = list;
    assert_int_equal(k8s_creds_load(&c, NULL, &cr, &err), -1);
    assert_non_null(strstr(err.msg, "unterminated flow sequence"));
    assert_non_null(strstr(err.msg, broken));

    const char *names[] = {"config", "broken", NULL};
    tmp_remove(&t, names);
    free(broken);
    free(src);
    free(want);
    free(list);
    free(path);
    free(text);
    clear_env();
}

static void relative_kubeconfig_path_gives_absolute_resolved_paths(void **state)
{
    (void)state;
    clear_env();
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    cfg c = {.kubeconfig = (char *)FIX "files.yaml"};
    k8s_creds cr;
    sw_err err = {0};
    assert_int_equal(k8s_creds_load(&c, NULL, &cr, &err), 0);
    char *want = xasprintf("%s/" FIX "secrets/token", cwd);
    assert_string_equal(cr.token_file, want);
    k8s_creds_free(&cr);
    free(want);
}

static void in_cluster(const char *host, const char *want_server)
{
    clear_env();
    tmp t;
    tmp_make(&t);
    char *tok = tmp_write(&t, "token", TOKEN "\n");
    char *ca = tmp_write(&t, "ca.crt", CA_PEM);
    char *ns = tmp_write(&t, "namespace", "  sandboxes-ns \n");
    setenv("KUBERNETES_SERVICE_HOST", host, 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    cfg c = {.kubeconfig = (char *)""};
    k8s_creds cr;
    sw_err err = {0};
    if (k8s_creds_load(&c, t.dir, &cr, &err) != 0) fail_msg("%s", err.msg);
    assert_string_equal(cr.server, want_server);
    assert_string_equal(cr.token_file, tok);
    assert_null(cr.token); /* read by the client, which re-reads it when it rotates */
    assert_string_equal(cr.ca_file, ca);
    assert_null(cr.ca_pem);
    assert_false(cr.insecure);
    assert_string_equal(cr.namespace_, "sandboxes-ns");
    assert_string_equal(cr.source, "in-cluster");
    k8s_creds_free(&cr);

    setenv("POD_NAMESPACE", "from-env", 1);
    assert_int_equal(k8s_creds_load(&c, t.dir, &cr, &err), 0);
    assert_string_equal(cr.namespace_, "from-env");
    k8s_creds_free(&cr);
    unsetenv("POD_NAMESPACE");

    unlink(ns);
    unlink(ca);
    assert_int_equal(k8s_creds_load(&c, t.dir, &cr, &err), 0);
    assert_string_equal(cr.namespace_, "default");
    assert_null(cr.ca_file); /* system roots, as client-go */
    k8s_creds_free(&cr);

    free(tmp_write(&t, "token", " \n"));
    assert_int_equal(k8s_creds_load(&c, t.dir, &cr, &err), -1);
    assert_non_null(strstr(err.msg, "is empty"));
    unlink(tok);
    assert_int_equal(k8s_creds_load(&c, t.dir, &cr, &err), -1);
    assert_non_null(strstr(err.msg, "cannot read the service-account token"));
    assert_int_equal(err.code, SW_E_BACKEND);
    assert_null(cr.server);

    const char *names[] = {"token", "ca.crt", "namespace", NULL};
    tmp_remove(&t, names);
    free(tok);
    free(ca);
    free(ns);
    clear_env();
}

static void in_cluster_ipv4(void **state)
{
    (void)state;
    in_cluster("10.96.0.1", "https://10.96.0.1:443");
}

static void in_cluster_ipv6_host_is_bracketed(void **state)
{
    (void)state;
    in_cluster("fd00:10:96::1", "https://[fd00:10:96::1]:443");
}

static void neither_kubeconfig_nor_pod_says_what_to_set(void **state)
{
    (void)state;
    clear_env();
    k8s_creds cr;
    sw_err err = {0};
    cfg c = {0};
    assert_int_equal(k8s_creds_load(&c, "/nonexistent", &cr, &err), -1);
    assert_string_equal(err.msg, "no kubernetes credentials: set KUBECONFIG or run in a pod "
                                 "with a service account");
    assert_int_equal(err.code, SW_E_BACKEND);
    assert_false(err.retryable);
    setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1", 1); /* port missing */
    setenv("KUBERNETES_SERVICE_PORT", "", 1);
    assert_int_equal(k8s_creds_load(&c, "/nonexistent", &cr, &err), -1);
    assert_non_null(strstr(err.msg, "no kubernetes credentials"));
    setenv("KUBERNETES_SERVICE_PORT", "44x3", 1);
    assert_int_equal(k8s_creds_load(&c, "/nonexistent", &cr, &err), -1);
    assert_non_null(strstr(err.msg, "are not a host and a port"));
    clear_env();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(kind_kubeconfig_gives_server_ca_and_client_certificate),
        cmocka_unit_test(another_context_gives_its_token_namespace_and_insecure_flag),
        cmocka_unit_test(eks_exec_plugin_is_refused_naming_the_command),
        cmocka_unit_test(auth_providers_basic_auth_and_impersonation_are_refused),
        cmocka_unit_test(hand_written_paths_resolve_against_the_kubeconfig_folder),
        cmocka_unit_test(data_fields_override_their_path_twins),
        cmocka_unit_test(base64_may_be_wrapped_but_must_be_valid),
        cmocka_unit_test(a_certificate_without_a_key_is_refused),
        cmocka_unit_test(broken_references_name_the_context_and_the_missing_piece),
        cmocka_unit_test(a_user_less_context_is_anonymous),
        cmocka_unit_test(json_kubeconfig_is_read_like_yaml),
        cmocka_unit_test(yaml_errors_carry_the_file_and_line_but_no_secret),
        cmocka_unit_test(kubeconfig_list_uses_the_first_file_that_exists),
        cmocka_unit_test(relative_kubeconfig_path_gives_absolute_resolved_paths),
        cmocka_unit_test(in_cluster_ipv4),
        cmocka_unit_test(in_cluster_ipv6_host_is_bracketed),
        cmocka_unit_test(neither_kubeconfig_nor_pod_says_what_to_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
