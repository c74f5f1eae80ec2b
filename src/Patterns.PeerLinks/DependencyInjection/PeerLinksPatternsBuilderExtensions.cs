using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.ServiceDiscovery;
using Patterns.Hosting;
using Patterns.PeerLinks;
using Patterns.Serialization;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Chooses peer links as the transport of every pattern.</summary>
public static class PeerLinksPatternsBuilderExtensions
{
    /// <summary>
    /// Uses peer links: this node listens on <see cref="PeerLinksOptions.ListenUri"/> and links to
    /// <see cref="PeerLinksOptions.Peers"/>; request-response, pub/sub and queues run across the nodes with the same
    /// handlers. The options are validated when the host starts; the listener starts with the host, and when the host
    /// stops (after its drain) the node tells its peers it leaves, so they mark it down at once, and closes its links and
    /// listener; a stopped node does not start again (a new host with the same node id rejoins). Registers a
    /// <c>peer-links</c> health check and <see cref="PeerMembership"/>. When service discovery is registered
    /// (<c>services.AddServiceDiscovery()</c>, Microsoft.Extensions.ServiceDiscovery), each peer is a service name resolved
    /// through it when the node starts, for example <c>http://billing</c> with the configuration provider's
    /// <c>Services:billing:http:0</c>; every endpoint it yields becomes a peer.
    /// </summary>
    /// <param name="builder">The Patterns builder.</param>
    /// <param name="configure">Sets the options.</param>
    /// <returns>The builder.</returns>
    public static PatternsBuilder UsePeerLinks(this PatternsBuilder builder, Action<PeerLinksOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        var services = builder.Services;
        services.Configure(configure);
        services.AddOptions<PeerLinksOptions>().ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<PeerLinksOptions>, PeerLinksOptionsValidator>());
        services.TryAddSingleton(static sp => new PeerLinksTransport(
            sp.GetRequiredService<IOptions<PeerLinksOptions>>().Value,
            sp.GetRequiredService<IMessageSerializer>(),
            sp.GetService<TimeProvider>() ?? TimeProvider.System,
            sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance,
            sp.GetService<ServiceEndpointResolver>()));
        services.TryAddSingleton(static sp => sp.GetRequiredService<PeerLinksTransport>().Membership);
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, PeerLinksHostedService>());
        services.AddHealthChecks().AddCheck<PeerLinksHealthCheck>("peer-links");
        return builder.UseTransport(static sp => sp.GetRequiredService<PeerLinksTransport>());
    }
}
