/* common/kubeconfig.c — kubeconfig and in-cluster credentials (contract: kubeconfig.h).
 * Owns: walking a kubeconfig tree (common/yaml.h) from current-context to its cluster and
 * user, the base64 "-data" fields, relative paths, the KUBECONFIG list, the service-account
 * files. Does not own: HTTP/TLS, reading the CA/cert/key files (libcurl takes paths), token
 * rotation (common/k8s.c re-reads token_file).
 * Why refuse rather than ignore: a kubeconfig whose user runs an exec plugin, uses an
 * auth-provider, basic auth or impersonation would otherwise connect anonymously (or as
 * someone else) and fail later with a 401/403 that says nothing about the cause.
 * Secrets (token, key) never reach a message; their copies are wiped before being freed. */
#include "common/kubeconfig.h"

#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "common/xmalloc.h"
#include "common/yaml.h"

#define SA_DIR_DEFAULT "/var/run/secrets/kubernetes.io/serviceaccount"
#define NO_CREDS "no kubernetes credentials: set KUBECONFIG or run in a pod with a service account"
#define USE_INSTEAD "use a service-account token or a client certificate"

static int fail(sw_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(sw_err *err, const char *fmt, ...)
{
    char msg[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return sw_errf(err, SW_E_BACKEND, false, "%s", msg);
}

/* ------------------------------------------------------------------ small pieces */

/* A name from the file as it may appear in a message: printable ASCII, else a placeholder
 * (a newline in a context name must not forge a log line). */
static const char *shown(const char *s)
{
    if (!s) return "?";
    for (const char *c = s; *c; c++)
        if (*c < ' ' || *c > '~') return "(unprintable)";
    return s;
}

static void wipe_free(char *p, size_t n)
{
    if (!p) return;
    explicit_bzero(p, n);
    free(p);
}

static int b64_val(int c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Standard base64 with padding (what Go writes for []byte), skipping whitespace so wrapped or
 * folded values decode. 0 with *out (NUL-terminated, caller frees) and *out_len, or -1. Our
 * own: reading a config needs no libcrypto. */
static int b64_decode(const char *s, size_t n, char **out, size_t *out_len)
{
    char *buf = xmalloc(n / 4 * 3 + 4);
    uint32_t acc = 0;
    size_t o = 0;
    int q = 0, pad = 0;
    for (size_t k = 0; k < n; k++) {
        int c = (unsigned char)s[k];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (c == '=') {
            if (++pad > 2) goto bad;
            continue;
        }
        int v = b64_val(c);
        if (v < 0 || pad) goto bad;
        acc = acc << 6 | (uint32_t)v;
        if (++q == 4) {
            buf[o++] = (char)(acc >> 16);
            buf[o++] = (char)(acc >> 8);
            buf[o++] = (char)acc;
            acc = 0;
            q = 0;
        }
    }
    if (pad && q + pad != 4) goto bad;
    if (!pad && q) goto bad;
    if (q == 2) buf[o++] = (char)(acc >> 4);
    if (q == 3) {
        buf[o++] = (char)(acc >> 10);
        buf[o++] = (char)(acc >> 2);
    }
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return 0;
bad:
    wipe_free(buf, n / 4 * 3 + 4);
    return -1;
}

/* 'path' resolved against 'base_dir' when relative (client-go's rule); caller frees. */
static char *resolve(const char *base_dir, const char *path)
{
    if (path[0] == '/' || !base_dir || !*base_dir) return xstrdup(path);
    size_t n = strlen(base_dir);
    return xasprintf("%s%s%s", base_dir, base_dir[n - 1] == '/' ? "" : "/", path);
}

/* Read a whole small file: 0 with *buf (NUL-terminated, caller wipes and frees) and *len, or
 * -1 with errno (EFBIG over 'max', EISDIR/EINVAL for a non-regular file). */
static int read_file(const char *path, size_t max, char **buf, size_t *len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC), rc = -1, saved = 0;
    char *b = NULL;
    size_t cap = 0, n = 0;
    struct stat st;
    if (fd < 0) return -1;
    if (fstat(fd, &st) < 0) goto out;
    if (!S_ISREG(st.st_mode)) {
        saved = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
        goto out;
    }
    cap = (size_t)st.st_size < max ? (size_t)st.st_size + 1 : max + 1;
    b = xmalloc(cap + 1);
    for (;;) { /* the file may grow between fstat and read: read up to max+1 at most */
        ssize_t r = read(fd, b + n, cap - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) goto out;
        if (r == 0) break;
        n += (size_t)r;
        if (n > max) {
            saved = EFBIG;
            goto out;
        }
        if (n == cap) {
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *nb = xmalloc(ncap + 1);
            memcpy(nb, b, n);
            wipe_free(b, cap + 1);
            b = nb;
            cap = ncap;
        }
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    b = NULL;
    rc = 0;
out:
    if (!saved) saved = errno;
    wipe_free(b, cap + 1);
    close(fd);
    errno = saved;
    return rc;
}

/* ------------------------------------------------------------------ kubeconfig tree */

typedef struct kc {
    const char *what;     /* "KUBECONFIG /x/config": prefix of every message */
    const char *base_dir;
    sw_err *err;
} kc;

/* Optional string member: 0 with *out NULL when absent, null or ""; -1 when not a string.
 * 'where' is "cluster 'c1'" and the like; the value itself is never printed. */
static int get_str(const kc *k, json_t *o, const char *key, const char *where, const char **out)
{
    json_t *v = json_object_get(o, key);
    *out = NULL;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v))
        return fail(k->err, "%s: %s: field '%s' must be a string", k->what, where, key);
    if (json_string_length(v) > 0) *out = json_string_value(v);
    return 0;
}

/* The member 'member' of the entry named 'name' in list 'list' ("clusters", ...), as
 * client-go reads it: a duplicate name is an error. 1 when defined, with *out the member
 * (borrowed; NULL when empty), 0 when not defined, -1 on error. */
static int find_named(const kc *k, json_t *root, const char *list, const char *member,
                      const char *name, json_t **out)
{
    json_t *arr = json_object_get(root, list), *e;
    size_t i;
    int found = 0;
    *out = NULL;
    if (!arr || json_is_null(arr)) return 0;
    if (!json_is_array(arr)) return fail(k->err, "%s: '%s' must be a list", k->what, list);
    json_array_foreach(arr, i, e) {
        json_t *nm = json_object_get(e, "name");
        if (!json_is_object(e) || !json_is_string(nm))
            return fail(k->err, "%s: entry %zu of '%s' has no name", k->what, i + 1, list);
        if (strcmp(json_string_value(nm), name)) continue;
        if (found)
            return fail(k->err, "%s: '%s' defines '%.64s' twice", k->what, list, shown(name));
        found = 1;
        json_t *m = json_object_get(e, member);
        if (m && !json_is_null(m) && !json_is_object(m))
            return fail(k->err, "%s: %s '%.64s': '%s' must be a mapping", k->what, member,
                        shown(name), member);
        *out = json_is_object(m) ? m : NULL;
    }
    return found;
}

/* A "-data" field (base64 PEM) or its path twin; the data wins. */
static int pem_field(const kc *k, json_t *o, const char *where, const char *data_key,
                     const char *path_key, char **pem, size_t *pem_len, char **file)
{
    const char *d, *path;
    if (get_str(k, o, data_key, where, &d) < 0 || get_str(k, o, path_key, where, &path) < 0)
        return -1;
    if (d) {
        if (b64_decode(d, strlen(d), pem, pem_len) < 0)
            return fail(k->err, "%s: %s: %s is not valid base64", k->what, where, data_key);
    } else if (path) {
        *file = resolve(k->base_dir, path);
    }
    return 0;
}

static int read_cluster(const kc *k, json_t *cl, const char *name, k8s_creds *out)
{
    char where[96];
    const char *server, *sni;
    snprintf(where, sizeof where, "cluster '%.64s'", shown(name));
    if (get_str(k, cl, "server", where, &server) < 0) return -1;
    if (!server) return fail(k->err, "%s: %s has no server", k->what, where);
    for (const char *s = server; *s; s++)
        if ((unsigned char)*s <= ' ' || *s == 0x7f)
            return fail(k->err, "%s: %s: server contains a space or control character", k->what,
                        where);
    size_t n = strlen(server);
    while (n > 0 && server[n - 1] == '/') n--;
    out->server = xstrndup(server, n);

    json_t *ins = json_object_get(cl, "insecure-skip-tls-verify");
    if (ins && !json_is_null(ins) && !json_is_boolean(ins))
        return fail(k->err, "%s: %s: insecure-skip-tls-verify must be true or false", k->what,
                    where);
    out->insecure = json_is_true(ins);
    if (get_str(k, cl, "tls-server-name", where, &sni) < 0) return -1;
    out->tls_server_name = xstrdup(sni);
    if (pem_field(k, cl, where, "certificate-authority-data", "certificate-authority",
                  &out->ca_pem, &out->ca_len, &out->ca_file) < 0)
        return -1;
    /* client-go refuses this pair too ("specifying a root certificates file with the
     * insecure flag is not allowed"): which one was meant is anyone's guess. */
    if (out->insecure && (out->ca_pem || out->ca_file))
        return fail(k->err, "%s: %s: insecure-skip-tls-verify with a certificate authority is "
                    "contradictory; remove one", k->what, where);
    return 0;
}

/* The ways of authenticating we do not implement, each named so the operator can act. */
static int refuse_unsupported_auth(const kc *k, json_t *u, const char *where)
{
    json_t *ex = json_object_get(u, "exec"), *ap = json_object_get(u, "auth-provider");
    if (ex && !json_is_null(ex)) {
        json_t *cmd = json_is_object(ex) ? json_object_get(ex, "command") : NULL;
        return fail(k->err, "%s: %s uses an exec credential plugin (command '%.48s'), which "
                    "snapworker does not run; " USE_INSTEAD, k->what, where,
                    shown(json_is_string(cmd) ? json_string_value(cmd) : NULL));
    }
    if (ap && !json_is_null(ap)) {
        json_t *nm = json_is_object(ap) ? json_object_get(ap, "name") : NULL;
        return fail(k->err, "%s: %s uses an auth-provider ('%.32s'), which snapworker does not "
                    "run; " USE_INSTEAD, k->what, where,
                    shown(json_is_string(nm) ? json_string_value(nm) : NULL));
    }
    json_t *un = json_object_get(u, "username"), *pw = json_object_get(u, "password");
    if ((un && !json_is_null(un) && !(json_is_string(un) && !json_string_length(un))) ||
        (pw && !json_is_null(pw) && !(json_is_string(pw) && !json_string_length(pw))))
        return fail(k->err, "%s: %s uses basic authentication (username/password), which "
                    "snapworker does not support; " USE_INSTEAD, k->what, where);
    const char *as[] = {"as", "as-uid", "as-groups", "as-user-extra"};
    for (size_t i = 0; i < sizeof as / sizeof as[0]; i++) {
        json_t *v = json_object_get(u, as[i]);
        if (v && !json_is_null(v))
            return fail(k->err, "%s: %s uses impersonation ('%s'), which snapworker does not "
                        "support", k->what, where, as[i]);
    }
    return 0;
}

static int read_user(const kc *k, json_t *u, const char *name, k8s_creds *out)
{
    char where[96];
    const char *tok, *tok_file;
    snprintf(where, sizeof where, "user '%.64s'", shown(name));
    if (refuse_unsupported_auth(k, u, where) < 0) return -1;
    if (get_str(k, u, "token", where, &tok) < 0 || get_str(k, u, "tokenFile", where, &tok_file) < 0)
        return -1;
    out->token = xstrdup(tok);
    if (tok_file) out->token_file = resolve(k->base_dir, tok_file);
    if (pem_field(k, u, where, "client-certificate-data", "client-certificate", &out->cert_pem,
                  &out->cert_len, &out->cert_file) < 0 ||
        pem_field(k, u, where, "client-key-data", "client-key", &out->key_pem, &out->key_len,
                  &out->key_file) < 0)
        return -1;
    bool cert = out->cert_pem || out->cert_file, key = out->key_pem || out->key_file;
    if (cert && !key)
        return fail(k->err, "%s: %s has a client certificate but no client key", k->what, where);
    if (key && !cert)
        return fail(k->err, "%s: %s has a client key but no client certificate", k->what, where);
    return 0;
}

/* Best effort: the tree's copies of the user's strings (token, key data) are wiped before
 * the tree is released. jansson hands out const pointers to buffers it owns and frees; we
 * overwrite their bytes (not their length) just before json_decref() frees them. */
static void wipe_strings(json_t *v)
{
    const char *key;
    json_t *m;
    size_t i;
    if (json_is_string(v)) {
        explicit_bzero((char *)(uintptr_t)json_string_value(v), json_string_length(v));
    } else if (json_is_object(v)) {
        json_object_foreach(v, key, m) wipe_strings(m);
    } else if (json_is_array(v)) {
        json_array_foreach(v, i, m) wipe_strings(m);
    }
}

static void wipe_users(json_t *root)
{
    json_t *users = json_object_get(root, "users"), *e;
    size_t i;
    if (!json_is_array(users)) return;
    json_array_foreach(users, i, e) {
        json_t *u = json_object_get(e, "user");
        if (json_is_object(u)) { /* one level: token, tokenFile, -data fields */
            const char *key;
            json_t *m;
            json_object_foreach(u, key, m) if (json_is_string(m)) wipe_strings(m);
        }
    }
}

/* The current context resolved to its cluster and user. */
static int walk(const kc *k, json_t *root, k8s_creds *out)
{
    const char *cur, *cl_name, *u_name, *ns;
    json_t *ctx, *cl, *u;
    char where[96];
    if (!json_is_object(root))
        return fail(k->err, "%s: not a kubeconfig (expected a mapping at the top)", k->what);
    if (get_str(k, root, "current-context", "top level", &cur) < 0) return -1;
    if (!cur) return fail(k->err, "%s: current-context is not set", k->what);
    int r = find_named(k, root, "contexts", "context", cur, &ctx);
    if (r < 0) return -1;
    if (r == 0)
        return fail(k->err, "%s: current-context '%.64s' is not defined in 'contexts'", k->what,
                    shown(cur));
    snprintf(where, sizeof where, "context '%.64s'", shown(cur));
    if (get_str(k, ctx, "cluster", where, &cl_name) < 0 || get_str(k, ctx, "user", where, &u_name) < 0 ||
        get_str(k, ctx, "namespace", where, &ns) < 0)
        return -1;
    if (!cl_name) return fail(k->err, "%s: %s has no cluster", k->what, where);
    if ((r = find_named(k, root, "clusters", "cluster", cl_name, &cl)) < 0) return -1;
    if (r == 0)
        return fail(k->err, "%s: %s names cluster '%.64s', which is not defined", k->what,
                    where, shown(cl_name));
    if (read_cluster(k, cl, cl_name, out) < 0) return -1;
    if (u_name) { /* no user: anonymous, as client-go allows */
        if ((r = find_named(k, root, "users", "user", u_name, &u)) < 0) return -1;
        if (r == 0)
            return fail(k->err, "%s: %s names user '%.64s', which is not defined", k->what,
                        where, shown(u_name));
        if (read_user(k, u, u_name, out) < 0) return -1;
    }
    out->namespace_ = xstrdup(ns);
    out->source = xasprintf("%s (context %.64s)", k->what, shown(cur));
    return 0;
}

int kubeconfig_parse(const char *text, size_t len, const char *base_dir, const char *what,
                     k8s_creds *out, sw_err *err)
{
    kc k = {.what = what ? what : "kubeconfig", .base_dir = base_dir, .err = err};
    yml_error ye;
    int rc = -1;
    memset(out, 0, sizeof *out);
    json_t *root = yml_load(text, len, &ye);
    if (!root) {
        fail(err, "%s: %s", k.what, ye.msg);
        goto out;
    }
    rc = walk(&k, root, out);
out:
    if (rc < 0) k8s_creds_free(out);
    if (root) wipe_users(root);
    json_decref(root);
    return rc;
}

/* ------------------------------------------------------------------ loading */

/* KUBECONFIG's folder, absolute (client-go makes it so), for relative paths. */
static char *config_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? xstrndup(path, slash == path ? 1 : (size_t)(slash - path)) : xstrdup(".");
    if (dir[0] == '/') return dir;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) return dir;
    char *abs = strcmp(dir, ".") ? xasprintf("%s/%s", cwd, dir) : xstrdup(cwd);
    free(dir);
    return abs;
}

static int load_kubeconfig(const char *path, k8s_creds *out, sw_err *err)
{
    char *text = NULL, *dir = NULL, *what = xasprintf("KUBECONFIG %s", path);
    size_t len = 0;
    int rc = -1;
    if (read_file(path, YML_MAX_BYTES, &text, &len) < 0) {
        if (errno == EFBIG) fail(err, "%s: over the %u MiB limit", what, YML_MAX_BYTES >> 20);
        else fail(err, "%s: %s", what, strerror(errno));
        goto out;
    }
    dir = config_dir(path);
    rc = kubeconfig_parse(text, len, dir, what, out, err);
out:
    wipe_free(text, len + 1);
    free(dir);
    free(what);
    return rc;
}

/* The first file of the ':'-list that exists. No merging across files (client-go merges;
 * snapworker reads one file and says so in docs/kubernetes.md). */
static int load_list(const char *list, k8s_creds *out, sw_err *err)
{
    char *copy = xstrdup(list), *save = NULL;
    int rc = -1;
    for (char *p = strtok_r(copy, ":", &save); p; p = strtok_r(NULL, ":", &save)) {
        if (access(p, F_OK) < 0) continue;
        rc = load_kubeconfig(p, out, err);
        goto out;
    }
    fail(err, "KUBECONFIG %.200s: no such file", list);
out:
    free(copy);
    return rc;
}

static void trim(char *s)
{
    size_t n = strlen(s), a = 0;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n'))
        n--;
    while (a < n && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r' || s[a] == '\n')) a++;
    memmove(s, s + a, n - a);
    s[n - a] = '\0';
}

static bool valid_host(const char *h)
{
    for (; *h; h++)
        if ((unsigned char)*h <= ' ' || *h == 0x7f || strchr("/@?#[]", *h)) return false;
    return true;
}

static bool valid_port(const char *p)
{
    long v = 0;
    for (const char *s = p; *s; s++) {
        if (*s < '0' || *s > '9' || s - p > 5) return false;
        v = v * 10 + (*s - '0');
    }
    return v >= 1 && v <= 65535;
}

/* client-go's InClusterConfig: host and port from the environment, the token kept as a file
 * (it rotates), ca.crt when present (else system roots, as client-go), and the namespace. */
static int load_in_cluster(const char *sa_dir, k8s_creds *out, sw_err *err)
{
    const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
    const char *pod_ns = getenv("POD_NAMESPACE");
    char *tok = NULL, *ns = NULL, *ns_path = NULL;
    size_t tok_len = 0, ns_len = 0;
    int rc = -1;
    if (!host || !*host || !port || !*port) return fail(err, NO_CREDS);
    if (!valid_host(host) || !valid_port(port))
        return fail(err, "in-cluster: KUBERNETES_SERVICE_HOST/_PORT ('%.64s', '%.8s') are not a "
                    "host and a port", shown(host), shown(port));
    if (!sa_dir) sa_dir = SA_DIR_DEFAULT;
    out->token_file = xasprintf("%s/token", sa_dir);
    if (read_file(out->token_file, 64 * 1024, &tok, &tok_len) < 0) {
        fail(err, "in-cluster: cannot read the service-account token %.160s: %s", out->token_file,
             strerror(errno));
        goto out;
    }
    trim(tok);
    if (!*tok) {
        fail(err, "in-cluster: the service-account token %.160s is empty", out->token_file);
        goto out;
    }
    out->server = strchr(host, ':') ? xasprintf("https://[%s]:%s", host, port)
                                    : xasprintf("https://%s:%s", host, port);
    out->ca_file = xasprintf("%s/ca.crt", sa_dir);
    if (access(out->ca_file, R_OK) < 0) {
        free(out->ca_file);
        out->ca_file = NULL;
    }
    ns_path = xasprintf("%s/namespace", sa_dir);
    if (pod_ns && *pod_ns) {
        out->namespace_ = xstrdup(pod_ns);
    } else if (read_file(ns_path, 4096, &ns, &ns_len) == 0) {
        trim(ns);
        out->namespace_ = xstrdup(*ns ? ns : "default");
    } else {
        out->namespace_ = xstrdup("default");
    }
    out->source = xstrdup("in-cluster");
    rc = 0;
out:
    wipe_free(tok, tok_len + 1);
    free(ns);
    free(ns_path);
    return rc;
}

int k8s_creds_load(const cfg *c, const char *sa_dir, k8s_creds *out, sw_err *err)
{
    memset(out, 0, sizeof *out);
    int rc = (c && c->kubeconfig && *c->kubeconfig) ? load_list(c->kubeconfig, out, err)
                                                    : load_in_cluster(sa_dir, out, err);
    if (rc < 0) k8s_creds_free(out);
    return rc;
}

void k8s_creds_free(k8s_creds *cr)
{
    if (!cr) return;
    wipe_free(cr->token, cr->token ? strlen(cr->token) : 0);
    wipe_free(cr->key_pem, cr->key_len);
    wipe_free(cr->cert_pem, cr->cert_len);
    wipe_free(cr->ca_pem, cr->ca_len);
    free(cr->server);
    free(cr->ca_file);
    free(cr->tls_server_name);
    free(cr->token_file);
    free(cr->cert_file);
    free(cr->key_file);
    free(cr->namespace_);
    free(cr->source);
    memset(cr, 0, sizeof *cr);
}
