/* tests/fuzz/fuzz_kubeconfig.c — libFuzzer harness for the kubeconfig reader: any bytes go
 * through yml_load (common/yaml.c) and the kubeconfig walk (common/kubeconfig.c). Checks
 * beyond the sanitizers: a YAML error always names its line, a failed parse leaves nothing
 * allocated, and a successful one has a server. Build and run: make fuzz-kubeconfig. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/kubeconfig.h"
#include "common/yaml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    yml_error ye;
    json_t *j = yml_load((const char *)data, size, &ye);
    if (!j && strncmp(ye.msg, "line ", 5) != 0) abort();
    json_decref(j);

    k8s_creds cr;
    sw_err err = {0};
    if (kubeconfig_parse((const char *)data, size, "/base", "fuzz", &cr, &err) == 0) {
        if (!cr.server || !cr.source) abort();
        k8s_creds_free(&cr);
    } else if (cr.server || cr.token || cr.key_pem || err.code != SW_E_BACKEND) {
        abort();
    }
    return 0;
}
