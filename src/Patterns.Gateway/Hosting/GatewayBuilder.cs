using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Patterns.Gateway.Configuration;
using Patterns.Gateway.Messaging;
using Yarp.ReverseProxy.Configuration;
using Yarp.ReverseProxy.Transforms.Builder;

namespace Patterns.Gateway;

/// <summary>
/// Configures the gateway: where routes and clusters come from (configuration with hot reload, or code), transforms,
/// and YARP itself through <see cref="ReverseProxy"/>.
/// </summary>
public sealed class GatewayBuilder
{
    internal GatewayBuilder(IReverseProxyBuilder reverseProxy) => ReverseProxy = reverseProxy;

    /// <summary>Gets the service collection.</summary>
    public IServiceCollection Services => ReverseProxy.Services;

    /// <summary>Gets YARP's own builder, for any YARP extension (transform providers, service discovery, ...).</summary>
    public IReverseProxyBuilder ReverseProxy { get; }

    /// <summary>
    /// Loads routes and clusters from a configuration section in YARP's schema (<c>Routes</c>, <c>Clusters</c>), extended by
    /// <see cref="GatewayMetadata"/> keys; request routes from its <c>Requests</c> section: HTTP routes that call request
    /// handlers (<c>"quotes": { "Path": "/api/quotes", "Request": "GetQuote" }</c>, the type named by
    /// <see cref="AddRequestType{TRequest, TResponse}"/>); and aggregate (BFF) routes from its <c>Aggregates</c> section
    /// (<c>"home": { "Path": "/bff/home/{id}", "Legs": { "user": { "Target": "users", "Path": "/users/{id}" } } }</c>).
    /// Every name and value is checked when the configuration loads (policy names included), so a bad one fails the host
    /// naming the route or cluster and the field. A change to the configuration applies without a restart; a bad change is
    /// logged and the last good configuration stays.
    /// </summary>
    /// <param name="section">The section, for example <c>builder.Configuration.GetSection("Gateway")</c>.</param>
    /// <returns>This builder.</returns>
    public GatewayBuilder LoadFromConfig(IConfiguration section)
    {
        ArgumentNullException.ThrowIfNull(section);
        ReverseProxy.LoadFromConfig(section);
        Services.AddSingleton(new GatewaySection(section));
        return this;
    }

    /// <summary>
    /// Adds routes and clusters defined in code. Change them later through <c>InMemoryConfigProvider.Update</c>
    /// (resolve <see cref="InMemoryConfigProvider"/> from the services).
    /// </summary>
    /// <param name="routes">The routes.</param>
    /// <param name="clusters">The clusters.</param>
    /// <returns>This builder.</returns>
    public GatewayBuilder LoadFromMemory(IReadOnlyList<RouteConfig> routes, IReadOnlyList<ClusterConfig> clusters)
    {
        ArgumentNullException.ThrowIfNull(routes);
        ArgumentNullException.ThrowIfNull(clusters);
        var provider = new InMemoryConfigProvider(routes, clusters);
        Services.AddSingleton(provider);
        Services.AddSingleton<IProxyConfigProvider>(provider);
        return this;
    }

    /// <summary>
    /// Makes a request type available to the request routes of configuration (<c>Requests:{id}:Request</c>), under
    /// <paramref name="name"/>. The route calls the handler registered for it with <c>AddRequestResponse</c>, on whichever
    /// transport is configured, exactly as <c>MapRequest&lt;TRequest, TResponse&gt;</c> does.
    /// </summary>
    /// <typeparam name="TRequest">The request type, read from the JSON body.</typeparam>
    /// <typeparam name="TResponse">The response type, written as JSON.</typeparam>
    /// <param name="name">The name configuration uses; by default the request type's name. Matched ignoring case.</param>
    /// <returns>This builder.</returns>
    public GatewayBuilder AddRequestType<TRequest, TResponse>(string? name = null)
        where TRequest : notnull
    {
        if (name is not null)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(name);
        }

        Services.AddSingleton<RequestTarget>(new RequestTarget<TRequest, TResponse>(name ?? typeof(TRequest).Name));
        return this;
    }

    /// <summary>
    /// Makes a message type available to the publish and send routes of configuration (<c>Requests:{id}:Publish</c> or
    /// <c>Requests:{id}:Send</c>), under <paramref name="name"/>: the route publishes the body, or sends it to a queue, and
    /// answers 202 Accepted, exactly as <c>MapPublish&lt;TMessage&gt;</c> and <c>MapSend&lt;TMessage&gt;</c> do.
    /// </summary>
    /// <typeparam name="TMessage">The message type, read from the JSON body.</typeparam>
    /// <param name="name">The name configuration uses; by default the message type's name. Matched ignoring case.</param>
    /// <returns>This builder.</returns>
    public GatewayBuilder AddMessageType<TMessage>(string? name = null)
        where TMessage : notnull
    {
        if (name is not null)
        {
            ArgumentException.ThrowIfNullOrWhiteSpace(name);
        }

        Services.AddSingleton<MessageTarget>(new MessageTarget<TMessage>(name ?? typeof(TMessage).Name));
        return this;
    }

    /// <summary>
    /// Defines (or adjusts) a named resilience policy, which routes choose with the <see cref="GatewayMetadata.ResiliencePolicy"/>
    /// metadata key. A policy of the same name under <c>ResiliencePolicies</c> in configuration is read first and
    /// <paramref name="configure"/> runs after it, on every configuration change.
    /// </summary>
    /// <param name="name">The policy's name, matched ignoring case.</param>
    /// <param name="configure">Sets the policy's strategies.</param>
    /// <returns>This builder.</returns>
    /// <example>
    /// <code>
    /// gateway.AddResiliencePolicy("standard", p =>
    /// {
    ///     p.Timeout = TimeSpan.FromSeconds(10);
    ///     p.Retry = new RetryStrategyOptions { MaxRetryAttempts = 2, Delay = TimeSpan.FromMilliseconds(100), BackoffType = DelayBackoffType.Exponential, UseJitter = true };
    ///     p.CircuitBreaker = new CircuitBreakerStrategyOptions { FailureRatio = 0.5, MinimumThroughput = 20, BreakDuration = TimeSpan.FromSeconds(15) };
    ///     p.MaxConcurrentCalls = 200;
    /// });
    /// </code>
    /// </example>
    public GatewayBuilder AddResiliencePolicy(string name, Action<GatewayResiliencePolicy> configure)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(configure);
        Services.AddSingleton(new Resilience.ResiliencePolicyConfiguration(name, configure));
        return this;
    }

    /// <summary>Adds request or response transforms to every route, next to the ones its configuration declares.</summary>
    /// <param name="configure">Called once per route when the configuration loads.</param>
    /// <returns>This builder.</returns>
    public GatewayBuilder AddTransforms(Action<TransformBuilderContext> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        ReverseProxy.AddTransforms(configure);
        return this;
    }

    /// <summary>Sets weights that apply from the start, before any live change through <see cref="DestinationWeights"/>.</summary>
    /// <param name="clusterId">The cluster.</param>
    /// <param name="weights">Destination id to weight.</param>
    /// <returns>This builder.</returns>
    public GatewayBuilder SetWeights(string clusterId, IReadOnlyDictionary<string, int> weights)
    {
        ArgumentException.ThrowIfNullOrEmpty(clusterId);
        ArgumentNullException.ThrowIfNull(weights);
        var copy = new Dictionary<string, int>(weights, StringComparer.OrdinalIgnoreCase);
        Services.TryAddSingleton<DestinationWeights>();
        Services.AddSingleton<IConfigureWeights>(new ConfigureWeights(clusterId, copy));
        return this;
    }

    /// <summary>Configures the options shared by every push endpoint (replay buffer per topic, connection cap).</summary>
    /// <param name="configure">Adjusts the options.</param>
    /// <returns>This builder.</returns>
    public GatewayBuilder ConfigurePush(Action<PushHubOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Services.Configure(configure);
        return this;
    }

    internal interface IConfigureWeights
    {
        void Apply(DestinationWeights weights);
    }

    private sealed class ConfigureWeights(string clusterId, Dictionary<string, int> weights) : IConfigureWeights
    {
        public void Apply(DestinationWeights target) => target.Set(clusterId, weights);
    }
}
