/* common/aws_creds.c — the AWS credentials chain (common/aws_creds.h, docs/store.md
 * "Credentials").
 * Owns: source selection, the three fetchers of temporary credentials (STS
 * AssumeRoleWithWebIdentity, the container endpoint, IMDSv2), their parsers, and the
 * process-wide cache with its refresh schedule. Does not own S3 signing.
 *
 *   awsc_get ──► static keys? ── copy
 *            └─► cache { current creds, refresh_at, refreshing } (one mutex + condvar)
 *                   due and nobody refreshing ──► this thread fetches (lock released),
 *                   others keep the current creds while usable, else wait for it
 *
 * Each request signs with what awsc_get returns when it starts, so a refresh never
 * touches a request in flight; the next one (the next part of a multipart upload)
 * signs with the new credentials. Every fetch is a blocking curl easy transfer on its
 * own handle with short timeouts; the cached secrets are wiped when replaced. */
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

#include "common/aws_creds.h"
#include "common/store.h"
#include "common/xmalloc.h"

#define BODY_MAX (64 * 1024)               /* answers and token files are small */
#define REFRESH_RETRY_S 5                  /* after a failed refresh while still usable */
#define FAIL_CACHE_MS 1000                 /* a failed fetch with nothing usable is reused */
#define IMDS_TOKEN_TTL "21600"
#define ECS_HOST "http://169.254.170.2"

struct awsc_provider {
    awsc_source src;
    char *access_key, *secret_key, *session_token;      /* AWSC_STATIC */
    char *role_arn, *token_file, *session_name, *sts_url;  /* AWSC_WEB_IDENTITY */
    char *container_url, *auth_token, *auth_token_file;  /* AWSC_CONTAINER */
    char *imds_base;                                     /* AWSC_IMDS */
    char *fp;                                            /* identity of the source (no secret) */
};

/* ---- small helpers ------------------------------------------------------------------ */

static bool set(const char *s) { return s && *s; }
static char *dupz(const char *s) { return set(s) ? xstrdup(s) : NULL; }

static void wipe_free(char *p)
{
    if (p) {
        volatile char *v = p;
        while (*v) *v++ = 0;
    }
    free(p);
}

void awsc_creds_clear(awsc_creds *c)
{
    if (!c) return;
    free(c->access_key);
    wipe_free(c->secret_key);
    wipe_free(c->token);
    memset(c, 0, sizeof *c);
}

static void creds_copy(awsc_creds *dst, const awsc_creds *src)
{
    dst->access_key = xstrdup(src->access_key);
    dst->secret_key = xstrdup(src->secret_key);
    dst->token = src->token ? xstrdup(src->token) : NULL;
    dst->expires_at = src->expires_at;
    dst->source = src->source;
}

static int64_t now_s(void) { return (int64_t)time(NULL); }

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *trim_end(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    return s;
}

/* The whole (small) file, trailing whitespace cut; NULL with errno. */
static char *read_small(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return NULL;
    char *buf = xmalloc(BODY_MAX + 1);
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, BODY_MAX - len);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            wipe_free(buf);
            errno = e;
            return NULL;
        }
        if (r == 0 || (len += (size_t)r) == BODY_MAX) break;
    }
    close(fd);
    buf[len] = 0;
    return trim_end(buf);
}

static char *enc(const char *s)
{
    size_t n = strlen(s) * 3 + 1;
    char *out = xmalloc(n);
    store_s3_uri_encode(s, false, out, n);
    return out;
}

/* ---- selection ---------------------------------------------------------------------- */

static const char *env_get(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

void awsc_env_load(awsc_env *e, const cfg *c)
{
    memset(e, 0, sizeof *e);
    e->access_key = c->aws_access_key_id;
    e->secret_key = c->aws_secret_access_key;
    e->session_token = c->aws_session_token;
    e->region = c->aws_region;
    e->role_arn = env_get("AWS_ROLE_ARN");
    e->token_file = env_get("AWS_WEB_IDENTITY_TOKEN_FILE");
    e->session_name = env_get("AWS_ROLE_SESSION_NAME");
    e->sts_endpoint = env_get("AWS_ENDPOINT_URL_STS");
    e->container_full_uri = env_get("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    e->container_relative_uri = env_get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    e->container_auth_token = env_get("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    e->container_auth_token_file = env_get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    e->imds_endpoint = env_get("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    const char *dis = env_get("AWS_EC2_METADATA_DISABLED");
    e->imds_disabled = dis && strcasecmp(dis, "true") == 0;
}

awsc_source awsc_pick(const awsc_env *e)
{
    if (set(e->access_key) || set(e->secret_key)) return AWSC_STATIC;
    if (set(e->token_file) || set(e->role_arn)) return AWSC_WEB_IDENTITY;
    if (set(e->container_full_uri) || set(e->container_relative_uri)) return AWSC_CONTAINER;
    return e->imds_disabled ? AWSC_NONE : AWSC_IMDS;
}

const char *awsc_source_name(awsc_source s)
{
    switch (s) {
    case AWSC_STATIC: return "environment";
    case AWSC_WEB_IDENTITY: return "web identity";
    case AWSC_CONTAINER: return "container credentials";
    case AWSC_IMDS: return "instance metadata (IMDSv2)";
    default: return "none";
    }
}

/* http(s) only; plain http only to loopback or the ECS/EKS link-local hosts, as the SDKs
 * allow (a credentials answer must not cross a network in the clear). */
static bool container_url_ok(const char *url)
{
    if (!strncmp(url, "https://", 8)) return true;
    if (strncmp(url, "http://", 7) != 0) return false;
    const char *h = url + 7;
    static const char *const ok[] = {"127.", "localhost", "[::1]", "169.254.170.2", "169.254.170.23",
                                     "[fd00:ec2::23]"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        size_t l = strlen(ok[i]);
        if (!strncmp(h, ok[i], l) && (ok[i][l - 1] == '.' || h[l] == 0 || h[l] == ':' || h[l] == '/'))
            return true;
    }
    return false;
}

static char *strip_slash(const char *s)
{
    size_t n = strlen(s);
    while (n && s[n - 1] == '/') n--;
    return xasprintf("%.*s", (int)n, s);
}

awsc_provider *awsc_provider_new(const awsc_env *e, sw_err *err)
{
    awsc_source src = awsc_pick(e);
    awsc_provider *p = xcalloc(1, sizeof *p);
    p->src = src;
    switch (src) {
    case AWSC_NONE:
        sw_errf(err, SW_E_STORAGE, false,
                "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN, or "
                "AWS_CONTAINER_CREDENTIALS_FULL_URI (IMDS is disabled by AWS_EC2_METADATA_DISABLED)");
        goto fail;
    case AWSC_STATIC:
        if (!set(e->access_key) || !set(e->secret_key)) {
            sw_errf(err, SW_E_STORAGE, false, "credentials incomplete: %s is set but %s is not",
                    set(e->access_key) ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                    set(e->access_key) ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
            goto fail;
        }
        p->access_key = xstrdup(e->access_key);
        p->secret_key = xstrdup(e->secret_key);
        p->session_token = dupz(e->session_token);
        p->fp = xstrdup("static");
        return p;
    case AWSC_WEB_IDENTITY:
        if (!set(e->token_file) || !set(e->role_arn)) {
            sw_errf(err, SW_E_STORAGE, false, "web identity: %s is set but %s is not",
                    set(e->role_arn) ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE",
                    set(e->role_arn) ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN");
            goto fail;
        }
        if (set(e->sts_endpoint) && strncmp(e->sts_endpoint, "http://", 7) &&
            strncmp(e->sts_endpoint, "https://", 8)) {
            sw_errf(err, SW_E_STORAGE, false,
                    "web identity: AWS_ENDPOINT_URL_STS: expected http(s)://host[:port], got '%.100s'",
                    e->sts_endpoint);
            goto fail;
        }
        p->role_arn = xstrdup(e->role_arn);
        p->token_file = xstrdup(e->token_file);
        p->session_name = set(e->session_name) ? xstrdup(e->session_name)
                                               : xasprintf("snapworker-%lld", (long long)now_s());
        p->sts_url = set(e->sts_endpoint)
                         ? strip_slash(e->sts_endpoint)
                         : xasprintf("https://sts.%s.amazonaws.com",
                                     set(e->region) ? e->region : "us-east-1");
        p->fp = xasprintf("web|%s|%s|%s", p->role_arn, p->token_file, p->sts_url);
        return p;
    case AWSC_CONTAINER:
        p->container_url = set(e->container_full_uri)
                               ? xstrdup(e->container_full_uri)
                               : xasprintf("%s%s%s", ECS_HOST,
                                           e->container_relative_uri[0] == '/' ? "" : "/",
                                           e->container_relative_uri);
        if (!container_url_ok(p->container_url)) {
            sw_errf(err, SW_E_STORAGE, false,
                    "container credentials: AWS_CONTAINER_CREDENTIALS_FULL_URI must be https, or "
                    "http to a loopback or the ECS/EKS link-local address");
            goto fail;
        }
        p->auth_token = dupz(e->container_auth_token);
        p->auth_token_file = dupz(e->container_auth_token_file);
        p->fp = xasprintf("container|%s|%s", p->container_url,
                          p->auth_token_file ? p->auth_token_file : "");
        return p;
    case AWSC_IMDS:
        if (set(e->imds_endpoint) && strncmp(e->imds_endpoint, "http://", 7) &&
            strncmp(e->imds_endpoint, "https://", 8)) {
            sw_errf(err, SW_E_STORAGE, false,
                    "instance metadata: AWS_EC2_METADATA_SERVICE_ENDPOINT: expected http(s)://host[:port]");
            goto fail;
        }
        p->imds_base = strip_slash(set(e->imds_endpoint) ? e->imds_endpoint : "http://169.254.169.254");
        p->fp = xasprintf("imds|%s", p->imds_base);
        return p;
    }
fail:
    awsc_provider_free(p);
    return NULL;
}

void awsc_provider_free(awsc_provider *p)
{
    if (!p) return;
    free(p->access_key);
    wipe_free(p->secret_key);
    wipe_free(p->session_token);
    free(p->role_arn);
    free(p->token_file);
    free(p->session_name);
    free(p->sts_url);
    free(p->container_url);
    wipe_free(p->auth_token);
    free(p->auth_token_file);
    free(p->imds_base);
    free(p->fp);
    free(p);
}

awsc_source awsc_provider_source(const awsc_provider *p) { return p->src; }

/* ---- pure helpers --------------------------------------------------------------------- */

int64_t awsc_refresh_at(int64_t obtained, int64_t expires)
{
    if (expires == 0) return INT64_MAX;
    int64_t life = expires - obtained;
    if (life <= 0) return obtained;
    int64_t half = (life + 1) / 2;                 /* rounded up: never after half-life */
    int64_t margin = half < 300 ? half : 300;
    return expires - margin;
}

bool awsc_usable(int64_t now, int64_t expires)
{
    return expires == 0 || now < expires - AWSC_EXPIRY_MARGIN_S;
}

int awsc_parse_sts(const char *body, size_t n, awsc_creds *out, char *code, size_t cn)
{
    memset(out, 0, sizeof *out);
    size_t pos = 0;
    char *c = body ? store_xml_take(body, n, &pos, "Code") : NULL;
    if (c) {
        snprintf(code, cn, "%.64s", c);
        free(c);
        return -1;
    }
    if (!body || !strstr(body, "AssumeRoleWithWebIdentityResult") || !strstr(body, "<Credentials>")) {
        snprintf(code, cn, "no Credentials in the answer");
        return -1;
    }
    /* the four names occur only inside <Credentials> */
    const char *x = body;
    size_t l = n, p1 = 0, p2 = 0, p3 = 0, p4 = 0;
    out->access_key = store_xml_take(x, l, &p1, "AccessKeyId");
    out->secret_key = store_xml_take(x, l, &p2, "SecretAccessKey");
    out->token = store_xml_take(x, l, &p3, "SessionToken");
    char *exp = store_xml_take(x, l, &p4, "Expiration");
    out->expires_at = store_s3_parse_time(exp);
    free(exp);
    out->source = AWSC_WEB_IDENTITY;
    const char *miss = !set(out->access_key) ? "AccessKeyId" : !set(out->secret_key) ? "SecretAccessKey"
                     : !set(out->token) ? "SessionToken" : out->expires_at <= 0 ? "Expiration" : NULL;
    if (miss) {
        snprintf(code, cn, "no valid %s in the answer", miss);
        awsc_creds_clear(out);
        return -1;
    }
    return 0;
}

int awsc_parse_json(const char *body, size_t n, awsc_creds *out, char *why, size_t wn)
{
    memset(out, 0, sizeof *out);
    json_t *j = body ? json_loadb(body, n, 0, NULL) : NULL;
    if (!json_is_object(j)) {
        snprintf(why, wn, "the answer is not a JSON object");
        json_decref(j);
        return -1;
    }
    const char *code = json_string_value(json_object_get(j, "Code"));
    if (code && strcmp(code, "Success") != 0) {
        snprintf(why, wn, "the answer says Code %.64s", code);
        json_decref(j);
        return -1;
    }
    const char *ak = json_string_value(json_object_get(j, "AccessKeyId"));
    const char *sk = json_string_value(json_object_get(j, "SecretAccessKey"));
    const char *tk = json_string_value(json_object_get(j, "Token"));
    json_t *ej = json_object_get(j, "Expiration");
    const char *miss = !set(ak) ? "AccessKeyId" : !set(sk) ? "SecretAccessKey" : NULL;
    int64_t exp = 0;
    if (!miss && ej) {
        exp = store_s3_parse_time(json_string_value(ej));
        if (exp <= 0) miss = "Expiration";
    }
    if (miss) {
        snprintf(why, wn, "no valid %s in the answer", miss);
        json_decref(j);
        return -1;
    }
    out->access_key = xstrdup(ak);
    out->secret_key = xstrdup(sk);
    out->token = set(tk) ? xstrdup(tk) : NULL;
    out->expires_at = exp;
    json_decref(j);
    return 0;
}

/* ---- one HTTP exchange ---------------------------------------------------------------- */

typedef struct hresp {
    char *body;
    size_t len;
    long status;
    CURLcode rc;
    char errbuf[CURL_ERROR_SIZE];
} hresp;

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
    hresp *r = ud;
    size_t n = sz * nm;
    if (r->len + n > BODY_MAX) return 0;            /* too big for a credentials answer */
    r->body = xrealloc(r->body, r->len + n + 1);
    memcpy(r->body + r->len, p, n);
    r->len += n;
    r->body[r->len] = 0;
    return n;
}

static void hresp_free(hresp *r)
{
    if (r->body) {
        memset(r->body, 0, r->len);
        free(r->body);
    }
    r->body = NULL;
    r->len = 0;
}

/* method GET/PUT/POST; body for POST (may hold a secret: never logged). */
static void http_do(const char *method, const char *url, const char *const *hdrs, const char *post,
                    long connect_ms, long total_ms, hresp *r)
{
    memset(r, 0, sizeof *r);
    CURL *e = curl_easy_init();
    if (!e) {
        r->rc = CURLE_OUT_OF_MEMORY;
        return;
    }
    struct curl_slist *hl = NULL;
    for (size_t i = 0; hdrs && hdrs[i]; i++) {
        struct curl_slist *n = curl_slist_append(hl, hdrs[i]);
        if (!n) abort();
        hl = n;
    }
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, total_ms);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, r->errbuf);
    if (!strcmp(method, "POST")) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)strlen(post));
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, post);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    }
    r->rc = curl_easy_perform(e);
    if (r->rc == CURLE_OK) curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &r->status);
    curl_easy_cleanup(e);
    curl_slist_free_all(hl);     /* the strings were copies; the caller wipes its own */
}

static bool curl_transient(CURLcode rc)
{
    return rc == CURLE_COULDNT_RESOLVE_HOST || rc == CURLE_COULDNT_CONNECT ||
           rc == CURLE_OPERATION_TIMEDOUT || rc == CURLE_SEND_ERROR || rc == CURLE_RECV_ERROR ||
           rc == CURLE_GOT_NOTHING || rc == CURLE_PARTIAL_FILE || rc == CURLE_SSL_CONNECT_ERROR;
}

/* err from a failed exchange; 'what' names the source and endpoint. */
static int http_fail(const hresp *r, const char *what, sw_err *err)
{
    if (r->rc != CURLE_OK)
        return sw_errf(err, SW_E_STORAGE, curl_transient(r->rc), "%s: %s%s%.80s", what,
                       curl_easy_strerror(r->rc), r->errbuf[0] ? ": " : "", r->errbuf);
    bool again = r->status >= 500 || r->status == 429;
    return sw_errf(err, SW_E_STORAGE, again, "%s answered HTTP %ld", what, r->status);
}

/* ---- the fetchers ---------------------------------------------------------------------- */

static int fetch_web_identity(const awsc_provider *p, awsc_creds *out, sw_err *err)
{
    char *jwt = read_small(p->token_file);
    if (!jwt)
        return sw_errf(err, SW_E_STORAGE, false,
                       "web identity: cannot read AWS_WEB_IDENTITY_TOKEN_FILE %.120s: %s",
                       p->token_file, strerror(errno));
    char *ea = enc(p->role_arn), *es = enc(p->session_name), *et = enc(jwt);
    wipe_free(jwt);
    char *form = xasprintf("Action=AssumeRoleWithWebIdentity&RoleArn=%s&RoleSessionName=%s"
                           "&Version=2011-06-15&WebIdentityToken=%s", ea, es, et);
    wipe_free(et);
    free(ea);
    free(es);
    char *url = xasprintf("%s/", p->sts_url);
    const char *hdrs[] = {"Content-Type: application/x-www-form-urlencoded", "Accept: text/xml",
                          NULL};
    hresp r;
    http_do("POST", url, hdrs, form, 5000, 10000, &r);
    wipe_free(form);
    char what[400];
    snprintf(what, sizeof what, "web identity: STS %.120s", url);
    free(url);
    int rc = 0;
    char code[96] = "";
    if (r.rc != CURLE_OK) {
        rc = http_fail(&r, what, err);
    } else if (awsc_parse_sts(r.body, r.len, out, code, sizeof code) < 0) {
        bool again = r.status >= 500 || r.status == 429 || !strcmp(code, "Throttling") ||
                     !strcmp(code, "IDPCommunicationError") || r.status < 300;
        rc = sw_errf(err, SW_E_STORAGE, again, "web identity: STS answered %ld %s for role %.120s",
                     r.status, code, p->role_arn);
    } else if (r.status >= 300) {
        awsc_creds_clear(out);
        rc = sw_errf(err, SW_E_STORAGE, r.status >= 500, "web identity: STS answered %ld for role %.120s",
                     r.status, p->role_arn);
    }
    hresp_free(&r);
    return rc;
}

static int fetch_container(const awsc_provider *p, awsc_creds *out, sw_err *err)
{
    char *auth = NULL;
    if (p->auth_token_file) {
        auth = read_small(p->auth_token_file);   /* re-read each time: EKS rotates it */
        if (!auth)
            return sw_errf(err, SW_E_STORAGE, false,
                           "container credentials: cannot read AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE "
                           "%.120s: %s", p->auth_token_file, strerror(errno));
    } else if (p->auth_token) {
        auth = xstrdup(p->auth_token);
    }
    if (auth && strpbrk(auth, "\r\n")) {
        wipe_free(auth);
        return sw_errf(err, SW_E_STORAGE, false,
                       "container credentials: the authorization token has a line break");
    }
    char *hdr = auth ? xasprintf("Authorization: %s", auth) : NULL;
    wipe_free(auth);
    const char *hdrs[] = {"Accept: application/json", hdr, NULL};
    hresp r;
    http_do("GET", p->container_url, hdrs, NULL, 2000, 5000, &r);
    wipe_free(hdr);
    char what[300], why[120];
    snprintf(what, sizeof what, "container credentials: %.200s", p->container_url);
    char *q = strchr(what, '?');
    if (q) *q = 0;                              /* a query might carry something private */
    int rc = 0;
    if (r.rc != CURLE_OK || r.status < 200 || r.status >= 300) rc = http_fail(&r, what, err);
    else if (awsc_parse_json(r.body, r.len, out, why, sizeof why) < 0)
        rc = sw_errf(err, SW_E_STORAGE, true, "%s: %s", what, why);
    else out->source = AWSC_CONTAINER;
    hresp_free(&r);
    return rc;
}

static int fetch_imds(const awsc_provider *p, awsc_creds *out, sw_err *err)
{
    char *url = xasprintf("%s/latest/api/token", p->imds_base);
    const char *th[] = {"X-aws-ec2-metadata-token-ttl-seconds: " IMDS_TOKEN_TTL, NULL};
    hresp r;
    http_do("PUT", url, th, NULL, 1000, 3000, &r);
    free(url);
    int rc = -1;
    char *tokhdr = NULL;
    if (r.rc != CURLE_OK) {
        /* nothing answers: not on EC2 (or IMDS is off), and nothing else was configured */
        bool absent = r.rc == CURLE_COULDNT_CONNECT || r.rc == CURLE_OPERATION_TIMEDOUT ||
                      r.rc == CURLE_COULDNT_RESOLVE_HOST;
        sw_errf(err, SW_E_STORAGE, !absent,
                "no AWS credentials: no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, web identity or "
                "container endpoint configured, and instance metadata (IMDSv2) at %.60s: %s",
                p->imds_base, curl_easy_strerror(r.rc));
        goto out;
    }
    if (r.status != 200 || !r.body || !*trim_end(r.body) || strpbrk(r.body, "\r\n")) {
        if (r.status == 200) r.status = 502;       /* an unusable token: treat as a server fault */
        http_fail(&r, "instance metadata (IMDSv2): the token PUT", err);
        goto out;
    }
    tokhdr = xasprintf("X-aws-ec2-metadata-token: %s", r.body);
    hresp_free(&r);
    const char *gh[] = {tokhdr, NULL};
    url = xasprintf("%s/latest/meta-data/iam/security-credentials/", p->imds_base);
    http_do("GET", url, gh, NULL, 1000, 3000, &r);
    free(url);
    if (r.rc != CURLE_OK || r.status != 200) {
        if (r.rc == CURLE_OK && r.status == 404)
            sw_errf(err, SW_E_STORAGE, false, "instance metadata (IMDSv2): the instance has no IAM role");
        else http_fail(&r, "instance metadata (IMDSv2): the role listing", err);
        goto out;
    }
    char role[256];
    const char *body = r.body ? r.body : "";
    size_t rl = strcspn(body, "\r\n");
    snprintf(role, sizeof role, "%.*s", (int)(rl < sizeof role - 1 ? rl : sizeof role - 1), body);
    hresp_free(&r);
    if (!role[0] || strchr(role, '/')) {
        sw_errf(err, SW_E_STORAGE, false, "instance metadata (IMDSv2): no usable IAM role name");
        goto out;
    }
    char *erole = enc(role);
    url = xasprintf("%s/latest/meta-data/iam/security-credentials/%s", p->imds_base, erole);
    free(erole);
    http_do("GET", url, gh, NULL, 1000, 3000, &r);
    free(url);
    char what[320], why[120];
    snprintf(what, sizeof what, "instance metadata (IMDSv2): the credentials of role %.200s", role);
    if (r.rc != CURLE_OK || r.status != 200) http_fail(&r, what, err);
    else if (awsc_parse_json(r.body, r.len, out, why, sizeof why) < 0)
        sw_errf(err, SW_E_STORAGE, true, "%s: %s", what, why);
    else {
        out->source = AWSC_IMDS;
        rc = 0;
    }
out:
    hresp_free(&r);
    wipe_free(tokhdr);
    return rc;
}

static int fetch(const awsc_provider *p, awsc_creds *out, sw_err *err)
{
    switch (p->src) {
    case AWSC_WEB_IDENTITY: return fetch_web_identity(p, out, err);
    case AWSC_CONTAINER: return fetch_container(p, out, err);
    case AWSC_IMDS: return fetch_imds(p, out, err);
    default: return sw_errf(err, SW_E_INTERNAL, false, "credentials: nothing to fetch");
    }
}

/* ---- the process-wide cache ------------------------------------------------------------ */

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *fp;                   /* the source the cached creds came from */
    awsc_creds cur;
    bool have;
    int64_t refresh_at;         /* unix s */
    int64_t retry_after;        /* unix s: no refresh attempt before (after a failure) */
    bool refreshing;            /* a thread is fetching (lock released) */
    int64_t fail_ms;            /* monotonic time of the last failed fetch with nothing usable */
    sw_err fail;
} C = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static void cache_reset_locked(const char *fp)
{
    awsc_creds_clear(&C.cur);
    C.have = false;
    C.refresh_at = C.retry_after = 0;
    C.fail_ms = 0;
    free(C.fp);
    C.fp = xstrdup(fp);
}

int awsc_get(awsc_provider *p, awsc_creds *out, sw_err *err)
{
    memset(out, 0, sizeof *out);
    if (p->src == AWSC_STATIC) {
        out->access_key = xstrdup(p->access_key);
        out->secret_key = xstrdup(p->secret_key);
        out->token = p->session_token ? xstrdup(p->session_token) : NULL;
        out->source = AWSC_STATIC;
        return 0;
    }
    pthread_mutex_lock(&C.mu);
    while (C.refreshing && (!C.fp || strcmp(C.fp, p->fp) != 0))
        pthread_cond_wait(&C.cv, &C.mu);          /* another source is being fetched */
    if (!C.fp || strcmp(C.fp, p->fp) != 0) cache_reset_locked(p->fp);
    for (;;) {
        int64_t now = now_s();
        bool usable = C.have && awsc_usable(now, C.cur.expires_at);
        bool due = !usable || (now >= C.refresh_at && now >= C.retry_after);
        if (usable && (!due || C.refreshing)) {
            creds_copy(out, &C.cur);
            pthread_mutex_unlock(&C.mu);
            return 0;
        }
        if (C.refreshing) {                          /* nothing usable: wait for the fetch */
            pthread_cond_wait(&C.cv, &C.mu);
            continue;
        }
        if (!usable && C.fail_ms && mono_ms() - C.fail_ms < FAIL_CACHE_MS) {
            if (err) *err = C.fail;
            pthread_mutex_unlock(&C.mu);
            return -1;
        }
        C.refreshing = true;
        pthread_mutex_unlock(&C.mu);
        awsc_creds fresh;
        sw_err e = {0};
        memset(&fresh, 0, sizeof fresh);
        int rc = fetch(p, &fresh, &e);
        int64_t got = now_s();
        if (rc == 0 && !awsc_usable(got, fresh.expires_at)) {   /* never loop on them */
            rc = sw_errf(&e, SW_E_STORAGE, true, "%s: the credentials fetched expire in %llds",
                         awsc_source_name(p->src), (long long)(fresh.expires_at - got));
            awsc_creds_clear(&fresh);
        }
        pthread_mutex_lock(&C.mu);
        C.refreshing = false;
        pthread_cond_broadcast(&C.cv);
        if (rc == 0) {
            awsc_creds_clear(&C.cur);
            C.cur = fresh;
            C.have = true;
            C.refresh_at = awsc_refresh_at(got, fresh.expires_at);
            C.retry_after = 0;
            C.fail_ms = 0;
            continue;
        }
        if (C.have && awsc_usable(got, C.cur.expires_at)) {   /* go on with the current ones */
            C.retry_after = got + REFRESH_RETRY_S;
            creds_copy(out, &C.cur);
            pthread_mutex_unlock(&C.mu);
            return 0;
        }
        C.fail = e;
        C.fail_ms = mono_ms();
        pthread_mutex_unlock(&C.mu);
        if (err) *err = e;
        return -1;
    }
}

bool awsc_invalidate(awsc_provider *p, const char *access_key)
{
    if (!p || p->src == AWSC_STATIC || !access_key) return false;
    bool dropped = false;
    pthread_mutex_lock(&C.mu);
    if (C.have && C.fp && !strcmp(C.fp, p->fp) && C.cur.access_key &&
        !strcmp(C.cur.access_key, access_key)) {
        awsc_creds_clear(&C.cur);
        C.have = false;
        C.refresh_at = C.retry_after = 0;
        dropped = true;
    }
    pthread_mutex_unlock(&C.mu);
    return dropped;
}
