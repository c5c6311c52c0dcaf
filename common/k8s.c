/* common/k8s.c — the Kubernetes client of common/k8s.h: the client object, the bearer token
 * (re-read as it rotates), TLS options for every libcurl handle, and GET/DELETE of pods and
 * services.
 * Owns: the server URL split (tls-server-name through CURLOPT_CONNECT_TO), the token lock,
 * one easy handle per REST request, and the mapping of answers to sw_err.
 * Does not own: finding the credentials (kubeconfig.c), pods/exec (k8s_exec.c), Status
 * decoding (k8s_status.c).
 * The token is a secret: it lives in k->token and in the request's header list only, is
 * wiped before it is freed, and no message or log line ever holds it. */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/k8s_priv.h"
#include "common/xmalloc.h"

#define REST_BODY_MAX (4 * 1024 * 1024)   /* a pod or service object is a few KiB */
#define TOKEN_MAX (64 * 1024)

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init_once(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int64_t k8s_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void k8s_wipe_free(char *s)
{
    if (!s) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

/* ------------------------------------------------------------------ token */

/* Read the token file, whitespace-trimmed; NULL when unreadable or empty. */
static char *read_token_file(const char *path)
{
    char *buf = NULL, *tok = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) goto out;
    buf = xmalloc(TOKEN_MAX + 1);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, TOKEN_MAX - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) goto out;
        if (r == 0 || (len += (size_t)r) == TOKEN_MAX) break;
    }
    size_t b = 0, e = len;
    while (b < e && isspace((unsigned char)buf[b])) b++;
    while (e > b && isspace((unsigned char)buf[e - 1])) e--;
    if (e > b) tok = xstrndup(buf + b, e - b);
out:
    if (buf) {
        explicit_bzero(buf, TOKEN_MAX + 1);
        free(buf);
    }
    if (fd >= 0) close(fd);
    return tok;
}

/* Why keep the old token on a failed read: the kubelet replaces the file atomically, so a
 * failure is a transient race or a broken mount, and the last token is still valid for a
 * while (client-go's cachingTokenSource does the same). */
char *k8s_auth_line(k8s_client *k, bool force, bool *changed)
{
    char *line = NULL;
    if (changed) *changed = false;
    pthread_mutex_lock(&k->mu);
    int64_t now = k8s_now_ms();
    if (k->cr.token_file && (force || !k->token || now - k->token_read_ms >= K8S_TOKEN_REREAD_MS)) {
        k->token_read_ms = now;
        char *t = read_token_file(k->cr.token_file);
        if (t && (!k->token || strcmp(t, k->token) != 0)) {
            if (changed) *changed = true;
            k8s_wipe_free(k->token);
            k->token = t;
        } else {
            k8s_wipe_free(t);
        }
    }
    if (k->token) line = xasprintf("Authorization: Bearer %s", k->token);
    pthread_mutex_unlock(&k->mu);
    return line;
}

/* ------------------------------------------------------------------ client */

/* Split cr->server into base URL, Host authority, CONNECT_TO and path prefix. */
static int split_server(k8s_client *k, sw_err *err)
{
    const char *s = k->cr.server ? k->cr.server : "";
    const char *sep = strstr(s, "://");
    if (!sep || (strncmp(s, "https", 5) != 0 && strncmp(s, "http", 4) != 0))
        return sw_errf(err, SW_E_BACKEND, false, "%s: server '%.100s' is not an http(s) URL",
                       k->cr.source ? k->cr.source : "kubernetes", s);
    bool tls = sep - s == 5;
    const char *auth = sep + 3, *path = strchr(auth, '/');
    if (!path) path = auth + strlen(auth);
    size_t al = (size_t)(path - auth);
    if (al == 0)
        return sw_errf(err, SW_E_BACKEND, false, "%s: server URL has no host",
                       k->cr.source ? k->cr.source : "kubernetes");
    /* Port: after the last ':' that follows any IPv6 bracket. */
    const char *rb = memchr(auth, ']', al), *colon = NULL;
    for (const char *p = rb ? rb : auth; p < path; p++)
        if (*p == ':') colon = p;
    size_t hl = colon ? (size_t)(colon - auth) : al;
    const char *port = colon ? colon + 1 : tls ? "443" : "80";
    int pl = colon ? (int)(path - colon - 1) : (int)strlen(port);
    k->host = xasprintf("%.*s:%.*s", (int)hl, auth, pl, port);
    size_t ppl = strlen(path);
    while (ppl && path[ppl - 1] == '/') ppl--;
    k->path_prefix = xstrndup(path, ppl);
    const char *sn = k->cr.tls_server_name;
    if (sn && *sn) {
        /* The URL carries the name to verify (and SNI); CONNECT_TO sends the connection
         * to the real host. The Host header keeps the real authority. */
        k->base = xasprintf("%.*s://%s:%.*s%s", (int)(sep - s), s, sn, pl, port, k->path_prefix);
        k->connect_to = xasprintf("%s:%.*s:%.*s:%.*s", sn, pl, port, (int)hl, auth, pl, port);
    } else {
        k->base = xasprintf("%.*s://%.*s%s", (int)(sep - s), s, (int)al, auth, k->path_prefix);
    }
    return 0;
}

k8s_client *k8s_client_new(const cfg *c, sw_err *err)
{
    k8s_client *k = NULL;
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_rc != CURLE_OK)
        return sw_errf(err, SW_E_BACKEND, false, "kubernetes: curl_global_init: %s",
                       curl_easy_strerror(curl_init_rc)), NULL;
    k = xcalloc(1, sizeof *k);
    pthread_mutex_init(&k->mu, NULL);
    if (k8s_creds_load(c, NULL, &k->cr, err) < 0) goto fail;
    if (split_server(k, err) < 0) goto fail;
    const char *ns = c->k8s_namespace && *c->k8s_namespace ? c->k8s_namespace
                     : k->cr.namespace_ && *k->cr.namespace_ ? k->cr.namespace_ : "default";
    for (const char *p = ns; *p; p++)
        if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '-') ||
            p - ns >= 63) {
            sw_errf(err, SW_E_BACKEND, false, "kubernetes: bad namespace '%.64s'", ns);
            goto fail;
        }
    k->ns = xstrdup(ns);
    k->timeout_s = c->k8s_api_timeout_s > 0 ? c->k8s_api_timeout_s : 30;
    if (k->cr.token && !k->cr.token_file) k->token = xstrdup(k->cr.token);
    else if (k->cr.token_file) {
        char *line = k8s_auth_line(k, true, NULL);
        k8s_wipe_free(line);
        if (!k->token && k->cr.token) k->token = xstrdup(k->cr.token);   /* kubeconfig rule */
        if (!k->token) {
            sw_errf(err, SW_E_BACKEND, false, "%s: token file %.120s is unreadable or empty",
                    k->cr.source ? k->cr.source : "kubernetes", k->cr.token_file);
            goto fail;
        }
    }
    return k;
fail:
    k8s_client_free(k);
    return NULL;
}

void k8s_client_free(k8s_client *k)
{
    if (!k) return;
    k8s_creds_free(&k->cr);
    k8s_wipe_free(k->token);
    free(k->ns);
    free(k->base);
    free(k->host);
    free(k->connect_to);
    free(k->path_prefix);
    pthread_mutex_destroy(&k->mu);
    free(k);
}

const char *k8s_client_server(const k8s_client *k)
{
    return k->cr.server;
}

const char *k8s_client_namespace(const k8s_client *k)
{
    return k->ns;
}

/* ------------------------------------------------------------------ TLS */

void k8s_curl_tls(k8s_client *k, CURL *e, long connect_timeout_ms)
{
    const k8s_creds *cr = &k->cr;
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https,http");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_timeout_ms > 0 ? connect_timeout_ms : 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    if (cr->insecure) {
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
    } else if (cr->ca_pem && cr->ca_len) {
        /* Only the cluster CA: no system roots next to it (client-go does the same). */
        struct curl_blob blob = {cr->ca_pem, cr->ca_len, CURL_BLOB_COPY};
        curl_easy_setopt(e, CURLOPT_CAINFO_BLOB, &blob);
        curl_easy_setopt(e, CURLOPT_CAPATH, (char *)NULL);
    } else if (cr->ca_file && *cr->ca_file) {
        curl_easy_setopt(e, CURLOPT_CAINFO, cr->ca_file);
        curl_easy_setopt(e, CURLOPT_CAPATH, (char *)NULL);
    }
    if (cr->cert_pem && cr->cert_len) {
        struct curl_blob blob = {cr->cert_pem, cr->cert_len, CURL_BLOB_COPY};
        curl_easy_setopt(e, CURLOPT_SSLCERT_BLOB, &blob);
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
    } else if (cr->cert_file && *cr->cert_file) {
        curl_easy_setopt(e, CURLOPT_SSLCERT, cr->cert_file);
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
    }
    if (cr->key_pem && cr->key_len) {
        struct curl_blob blob = {cr->key_pem, cr->key_len, CURL_BLOB_COPY};
        curl_easy_setopt(e, CURLOPT_SSLKEY_BLOB, &blob);
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    } else if (cr->key_file && *cr->key_file) {
        curl_easy_setopt(e, CURLOPT_SSLKEY, cr->key_file);
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
    }
    if (k->connect_to) {
        /* curl does not copy this list: it must live as long as the handle. */
        struct curl_slist *l = curl_slist_append(NULL, k->connect_to);
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, l);
        curl_easy_setopt(e, CURLOPT_PRIVATE, l);   /* freed by k8s_curl_done() */
    }
}

/* Clean up a handle set up by k8s_curl_tls (and its CONNECT_TO list). NULL-safe. */
static void curl_done(CURL *e)
{
    if (!e) return;
    struct curl_slist *l = NULL;
    curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&l);
    curl_easy_cleanup(e);
    curl_slist_free_all(l);
}

void k8s_curl_done(CURL *e)
{
    curl_done(e);
}

/* ------------------------------------------------------------------ REST */

typedef struct rest_buf {
    char *p;
    size_t len, cap;
    bool over;   /* more than REST_BODY_MAX arrived */
} rest_buf;

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    rest_buf *b = ud;
    size_t n = sz * nm;
    if (b->len + n > REST_BODY_MAX) {
        b->over = true;
        return 0;   /* aborts the transfer */
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 8192;
        while (cap < b->len + n + 1) cap *= 2;
        b->p = xrealloc(b->p, cap);
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    b->p[b->len] = '\0';
    return n;
}

/* One attempt of METHOD on the object; fills *status and *b (may be partial). */
static CURLcode rest_once(k8s_client *k, const char *method, const char *url, const char *body,
                          const char *auth, long *status, rest_buf *b, char *errbuf)
{
    struct curl_slist *h = NULL;
    CURL *e = curl_easy_init();
    CURLcode rc = CURLE_OUT_OF_MEMORY;
    if (!e) goto out;
    char host[300];
    snprintf(host, sizeof host, "Host: %s", k->host);
    h = curl_slist_append(h, "Accept: application/json");
    if (k->connect_to) h = curl_slist_append(h, host);
    if (auth) h = curl_slist_append(h, auth);
    if (body) h = curl_slist_append(h, "Content-Type: application/json");
    k8s_curl_tls(k, e, (long)k->timeout_s * 1000);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "snapworker");
    /* One request per handle: HTTP/2 would buy nothing, and a server that refuses h2
     * (or a proxy) would cost a second connection. */
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)k->timeout_s * 1000);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, b);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
    if (strcmp(method, "GET") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body) curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    rc = curl_easy_perform(e);
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
out:
    curl_done(e);
    /* The header list holds the token: wipe its copy before freeing. */
    for (struct curl_slist *p = h; p; p = p->next) explicit_bzero(p->data, strlen(p->data));
    curl_slist_free_all(h);
    return rc;
}

static bool curl_retryable(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST: case CURLE_COULDNT_CONNECT: case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR: case CURLE_RECV_ERROR: case CURLE_GOT_NOTHING: case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR: case CURLE_HTTP2: case CURLE_HTTP2_STREAM:
    case CURLE_WEIRD_SERVER_REPLY: case CURLE_AGAIN:
        return true;
    default:
        return false;
    }
}

/* GET or DELETE with the 401 re-read rule; see k8s.h for the return values. */
static int rest(k8s_client *k, const char *method, const char *kind, const char *name,
                const char *body, char **out, sw_err *err)
{
    char *url = NULL, *auth = NULL, what[320], errbuf[CURL_ERROR_SIZE];
    rest_buf b = {0};
    int ret = -1;
    if (out) *out = NULL;
    if (strcmp(kind, "pods") != 0 && strcmp(kind, "services") != 0) {
        sw_errf(err, SW_E_BACKEND, false, "kubernetes: unsupported kind '%.32s'", kind);
        goto out;
    }
    snprintf(what, sizeof what, "%s %.253s", kind, name);
    if (!k8s_valid_name(name)) {
        sw_errf(err, SW_E_BACKEND, false, "%s: invalid object name", kind);
        goto out;
    }
    url = xasprintf("%s/api/v1/namespaces/%s/%s/%s", k->base, k->ns, kind, name);
    long status = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        bool changed = false;
        k8s_wipe_free(auth);
        auth = k8s_auth_line(k, attempt > 0, &changed);
        if (attempt > 0 && !changed) break;   /* the same token would get the same 401 */
        free(b.p);
        memset(&b, 0, sizeof b);
        errbuf[0] = '\0';
        status = 0;
        CURLcode rc = rest_once(k, method, url, body, auth, &status, &b, errbuf);
        if (rc != CURLE_OK) {
            if (b.over)
                sw_errf(err, SW_E_BACKEND, false, "%s: %s answer larger than %d bytes", what,
                        method, REST_BODY_MAX);
            else
                sw_errf(err, SW_E_BACKEND, curl_retryable(rc), "%s: %s: %s%s%s", what, method,
                        curl_easy_strerror(rc), errbuf[0] ? ": " : "", errbuf);
            goto out;
        }
        if (status != 401 || !k->cr.token_file) break;
    }
    if (status >= 200 && status < 300) {
        if (out) {
            *out = b.p ? b.p : xstrdup("");
            b.p = NULL;
        }
        ret = (int)status;
    } else if (status == 404) {
        ret = 404;
    } else {
        char m[sizeof err->msg];
        k8s_http_error_msg(what, status, b.p, b.len, m, sizeof m);
        sw_errf(err, SW_E_BACKEND, k8s_http_retryable(status), "%s", m);
    }
out:
    k8s_wipe_free(auth);
    free(b.p);
    free(url);
    return ret;
}

int k8s_get(k8s_client *k, const char *kind, const char *name, char **body, sw_err *err)
{
    return rest(k, "GET", kind, name, NULL, body, err);
}

int k8s_delete(k8s_client *k, const char *kind, const char *name, const char *uid, sw_err *err)
{
    char *body = NULL;
    if (uid) {
        json_t *o = json_pack("{s:s, s:s, s:{s:s}}", "kind", "DeleteOptions", "apiVersion", "v1",
                              "preconditions", "uid", uid);
        body = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (!body)
            return sw_errf(err, SW_E_BACKEND, false, "%s %.100s: bad uid precondition", kind,
                           name);
    }
    int rc = rest(k, "DELETE", kind, name, body, NULL, err);
    free(body);
    return rc;
}
