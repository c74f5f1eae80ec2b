using Microsoft.Extensions.DependencyInjection.Extensions;
using Patterns.Gateway;
using Patterns.Gateway.Configuration;
using Patterns.Gateway.Health;
using Patterns.Gateway.LoadBalancing;
using Patterns.Gateway.Push;
using Patterns.Gateway.Security;
using Patterns.Gateway.Resilience;
using Yarp.ReverseProxy.Forwarder;
using Yarp.ReverseProxy.Health;
using Yarp.ReverseProxy.LoadBalancing;
using Yarp.ReverseProxy.Transforms;
using Yarp.ReverseProxy.Transforms.Builder;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Registers the gateway on a service collection.</summary>
public static class GatewayServiceCollectionExtensions
{
    /// <summary>
    /// Adds the gateway: YARP with the <see cref="GatewayPolicies.Weighted"/> load-balancing policy, the
    /// <see cref="GatewayPolicies.OutlierDetection"/> passive health policy, per-cluster resilience, and
    /// <see cref="DestinationWeights"/>. Calling it again only runs <paramref name="configure"/>.
    /// </summary>
    /// <param name="services">The services.</param>
    /// <param name="configure">Chooses where routes come from and adds transforms.</param>
    /// <returns>The gateway builder.</returns>
    public static GatewayBuilder AddGateway(this IServiceCollection services, Action<GatewayBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        GatewayBuilder builder;
        if (services.FirstOrDefault(d => d.ServiceType == typeof(GatewayBuilder))?.ImplementationInstance is GatewayBuilder existing)
        {
            builder = existing;
        }
        else
        {
            var proxy = services.AddReverseProxy();
            builder = new GatewayBuilder(proxy);
            services.AddSingleton(builder);
            proxy.AddConfigFilter<GatewayConfigFilter>();
            proxy.AddTransforms(static context => context.AddRequestTransform(static transform =>
            {
                HopByHopHeaders.Remove(transform.HttpContext, transform.ProxyRequest);
                return default;
            }));

            // Every route's transformer hands the request's context to the resilience handler after its last transform.
            var transforms = services.Last(d => d.ServiceType == typeof(ITransformBuilder));
            services.Remove(transforms);
            services.AddSingleton<ITransformBuilder>(sp => new HandoffTransformBuilder(
                (ITransformBuilder)(transforms.ImplementationInstance ?? transforms.ImplementationFactory?.Invoke(sp) ?? ActivatorUtilities.CreateInstance(sp, transforms.ImplementationType!)),
                sp.GetRequiredService<ResiliencePolicyRegistry>(),
                sp.GetRequiredService<OutlierDetector>()));
            services.TryAddSingleton<ResiliencePolicyRegistry>();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<Yarp.ReverseProxy.Configuration.IConfigChangeListener, PolicyPruner>());
            services.TryAddSingleton(TimeProvider.System);
            services.TryAddSingleton<DestinationWeights>();
            services.TryAddSingleton<WeightedLoadBalancingPolicy>();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<ILoadBalancingPolicy, WeightedLoadBalancingPolicy>(static sp => sp.GetRequiredService<WeightedLoadBalancingPolicy>()));
            services.TryAddSingleton<OutlierDetector>();
            services.TryAddEnumerable(ServiceDescriptor.Singleton<IPassiveHealthCheckPolicy, OutlierDetectionPolicy>());
            services.Replace(ServiceDescriptor.Singleton<IForwarderHttpClientFactory, GatewayForwarderHttpClientFactory>());
            services.AddHostedService<GatewayStartup>();
            services.TryAddSingleton<PushHub>();
            services.TryAddSingleton<Patterns.Gateway.Aggregation.AggregateClient>();
            services.AddOptions<PushHubOptions>()
                .Validate(static o => o.ReplayCount >= 0 && o.MaxConnections >= 1, "PushHubOptions: ReplayCount must be 0 or more and MaxConnections at least 1.")
                .ValidateOnStart();
        }

        configure?.Invoke(builder);
        return builder;
    }
}
