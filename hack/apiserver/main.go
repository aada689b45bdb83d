// dra-test-apiserver: k8s.io/apiextensions-apiserver (Debian golang-k8s-apiextensions-apiserver-dev)
// started standalone, without a kube-apiserver behind it, for tests that need real apiserver
// machinery (etcd storage, resourceVersions, watch, field selectors, 409 conflicts,
// status subresource, server-side apply) for CRDs that imitate built-in resource.k8s.io/v1.
//
// Differences from the upstream apiextensions-apiserver main (k8s.io/apiextensions-apiserver/main.go):
//   - no core API (--kubeconfig) is needed: CoreAPI, admission (NamespaceLifecycle, webhooks,
//     admission policies) and API priority and fairness are off;
//   - authorization is AlwaysAllow; authentication is anonymous, plus x509 client certs when
//     --client-ca-file is given;
//   - root discovery (/apis, aggregated and legacy) is served, so kubectl and discovery-based
//     clients work; CRD groups are listed in legacy /apis too.
//   - listens on 127.0.0.1:6443 by default;
//   - --smp-as-merge-patch (default true): a strategic-merge-patch request to
//     /apis/resource.k8s.io/ is served as a JSON merge patch (CRDs reject strategic merge patch
//     with 415). Same result for the resource.k8s.io/v1 fields without patchStrategy (e.g.
//     ResourceClaim status.devices); lists with a merge key (status.reservedFor,
//     metadata.finalizers, metadata.ownerReferences) are replaced instead of merged.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"sync"

	"github.com/spf13/cobra"
	noopoteltrace "go.opentelemetry.io/otel/trace/noop"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/apiserver"
	"k8s.io/apiextensions-apiserver/pkg/cmd/server/options"
	generatedopenapi "k8s.io/apiextensions-apiserver/pkg/generated/openapi"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	openapinamer "k8s.io/apiserver/pkg/endpoints/openapi"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/util/openapi"
	"k8s.io/apiserver/pkg/util/webhook"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/cache"
	"k8s.io/component-base/cli"
	netutils "k8s.io/utils/net"
)

type noServices struct{}

func (noServices) ResolveEndpoint(namespace, name string, port int32) (*url.URL, error) {
	return nil, fmt.Errorf("no core API: cannot resolve service %s/%s:%d (conversion webhooks unsupported)", namespace, name, port)
}

func newOptions() *options.CustomResourceDefinitionsServerOptions {
	o := options.NewCustomResourceDefinitionsServerOptions(os.Stdout, os.Stderr)
	ro := o.RecommendedOptions
	ro.CoreAPI = nil
	ro.Admission = nil
	ro.Authorization = nil // => AlwaysAllow
	ro.Authentication.RemoteKubeConfigFileOptional = true
	ro.Authentication.SkipInClusterLookup = true
	ro.Features.EnablePriorityAndFairness = false
	ro.SecureServing.BindAddress = netutils.ParseIPSloppy("127.0.0.1")
	ro.SecureServing.BindPort = 6443
	return o
}

var smpAsMergePatch = true

func strategicAsMergePatch(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, "/apis/resource.k8s.io/") &&
			strings.HasPrefix(r.Header.Get("Content-Type"), "application/strategic-merge-patch+json") {
			r.Header.Set("Content-Type", "application/merge-patch+json")
		}
		h.ServeHTTP(w, r)
	})
}

func run(ctx context.Context, o *options.CustomResourceDefinitionsServerOptions) error {
	if err := o.RecommendedOptions.SecureServing.MaybeDefaultWithSelfSignedCerts("localhost", nil, []net.IP{netutils.ParseIPSloppy("127.0.0.1")}); err != nil {
		return fmt.Errorf("error creating self-signed certificates: %v", err)
	}
	serverConfig := genericapiserver.NewRecommendedConfig(apiserver.Codecs)
	if err := o.ServerRunOptions.ApplyTo(&serverConfig.Config); err != nil {
		return err
	}
	if err := o.RecommendedOptions.ApplyTo(serverConfig); err != nil {
		return err
	}
	if err := o.APIEnablement.ApplyTo(&serverConfig.Config, apiserver.DefaultAPIResourceConfigSource(), apiserver.Scheme); err != nil {
		return err
	}
	serverConfig.OpenAPIV3Config = genericapiserver.DefaultOpenAPIV3Config(
		openapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions),
		openapinamer.NewDefinitionNamer(apiserver.Scheme, scheme.Scheme))
	if smpAsMergePatch {
		serverConfig.BuildHandlerChainFunc = func(h http.Handler, c *genericapiserver.Config) http.Handler {
			return strategicAsMergePatch(genericapiserver.DefaultBuildHandlerChain(h, c))
		}
	}
	// like kube-apiserver, publish CRD schemas on /openapi/v2 and /openapi/v3 (kubectl explain,
	// client-side validation); the CRD OpenAPI controllers only run when the v2 config is set.
	serverConfig.OpenAPIConfig = genericapiserver.DefaultOpenAPIConfig(
		openapi.GetOpenAPIDefinitionsWithoutDisabledFeatures(generatedopenapi.GetOpenAPIDefinitions),
		openapinamer.NewDefinitionNamer(apiserver.Scheme, scheme.Scheme))
	config := &apiserver.Config{
		GenericConfig: serverConfig,
		ExtraConfig: apiserver.ExtraConfig{
			CRDRESTOptionsGetter: options.NewCRDRESTOptionsGetter(*o.RecommendedOptions.Etcd, serverConfig.ResourceTransformers, serverConfig.StorageObjectCountTracker),
			ServiceResolver:      noServices{},
			AuthResolverWrapper:  webhook.NewDefaultAuthenticationInfoResolverWrapper(nil, nil, serverConfig.LoopbackClientConfig, noopoteltrace.NewTracerProvider()),
		},
	}
	completed := config.Complete()
	completed.GenericConfig.EnableDiscovery = true // kube-apiserver serves /apis; apiextensions alone does not
	server, err := completed.New(genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}

	// Legacy (non-aggregated) /apis lists CRD groups in kube-apiserver (via the aggregator);
	// reproduce that from the CRD informer.
	crdInformer := server.Informers.Apiextensions().V1().CustomResourceDefinitions()
	var mu sync.Mutex
	listed := sets.New[string]()
	syncGroups := func() {
		mu.Lock()
		defer mu.Unlock()
		crds, err := crdInformer.Lister().List(labels.Everything())
		if err != nil {
			return
		}
		versions := map[string][]string{}
		for _, crd := range crds {
			established := false
			for _, c := range crd.Status.Conditions {
				if c.Type == apiextensionsv1.Established && c.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				continue
			}
			for _, v := range crd.Spec.Versions {
				if v.Served && !sets.New(versions[crd.Spec.Group]...).Has(v.Name) {
					versions[crd.Spec.Group] = append(versions[crd.Spec.Group], v.Name)
				}
			}
		}
		for group, vs := range versions {
			sort.Strings(vs)
			g := metav1.APIGroup{Name: group}
			for _, v := range vs {
				g.Versions = append(g.Versions, metav1.GroupVersionForDiscovery{GroupVersion: group + "/" + v, Version: v})
			}
			g.PreferredVersion = g.Versions[len(g.Versions)-1]
			server.GenericAPIServer.DiscoveryGroupManager.AddGroup(g)
			listed.Insert(group)
		}
		for group := range listed {
			if _, ok := versions[group]; !ok {
				server.GenericAPIServer.DiscoveryGroupManager.RemoveGroup(group)
				listed.Delete(group)
			}
		}
	}
	if _, err := crdInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(interface{}) { syncGroups() },
		UpdateFunc: func(interface{}, interface{}) { syncGroups() },
		DeleteFunc: func(interface{}) { syncGroups() },
	}); err != nil {
		return err
	}
	return server.GenericAPIServer.PrepareRun().RunWithContext(ctx)
}

func main() {
	ctx := genericapiserver.SetupSignalContext()
	o := newOptions()
	cmd := &cobra.Command{
		Use:   "dra-test-apiserver",
		Short: "standalone apiextensions-apiserver for tests (no kube-apiserver, AlwaysAllow)",
		PersistentPreRunE: func(*cobra.Command, []string) error {
			return o.ServerRunOptions.ComponentGlobalsRegistry.Set()
		},
		RunE: func(c *cobra.Command, args []string) error {
			if err := o.Complete(); err != nil {
				return err
			}
			if err := o.Validate(); err != nil {
				return err
			}
			return run(c.Context(), o)
		},
	}
	cmd.SetContext(ctx)
	o.AddFlags(cmd.Flags())
	cmd.Flags().BoolVar(&smpAsMergePatch, "smp-as-merge-patch", smpAsMergePatch,
		"serve strategic-merge-patch requests to /apis/resource.k8s.io/ as JSON merge patch")
	os.Exit(cli.Run(cmd))
}
