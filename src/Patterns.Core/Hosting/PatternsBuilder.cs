using System.Text.Json.Serialization;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Options;
using Patterns.InMemory;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Hosting;

/// <summary>
/// Chooses, once for the whole application, the transport and serializer every pattern uses.
/// Plug-in packages add their own <c>UseXxx</c> extension methods to this builder.
/// </summary>
public sealed class PatternsBuilder
{
    internal PatternsBuilder(IServiceCollection services) => Services = services;

    /// <summary>Gets the service collection, for plug-ins that register their own services.</summary>
    public IServiceCollection Services { get; }

    /// <summary>Uses the in-memory transport (the default).</summary>
    /// <param name="configure">Adjusts its options.</param>
    /// <returns>This builder.</returns>
    public PatternsBuilder UseInMemory(Action<InMemoryTransportOptions>? configure = null)
    {
        if (configure is not null)
        {
            Services.Configure(configure);
        }

        return UseTransport(static sp => InMemoryTransport.Create(
            sp.GetRequiredService<IOptions<InMemoryTransportOptions>>().Value,
            sp.GetRequiredService<TimeProvider>(),
            PatternsServiceCollectionExtensions.LoggerFactory(sp)));
    }

    /// <summary>Uses a transport built by <paramref name="factory"/>, replacing the one chosen before.</summary>
    /// <param name="factory">Creates the transport from the application's services; called once.</param>
    /// <returns>This builder.</returns>
    public PatternsBuilder UseTransport(Func<IServiceProvider, MessageTransport> factory)
    {
        ArgumentNullException.ThrowIfNull(factory);
        Services.Replace(ServiceDescriptor.Singleton(sp => TransportDecorator.ApplyAll(factory(sp), sp)));
        return this;
    }

    /// <summary>Uses a serializer for transports that cross a process boundary.</summary>
    /// <param name="serializer">The serializer.</param>
    /// <returns>This builder.</returns>
    public PatternsBuilder UseSerializer(IMessageSerializer serializer)
    {
        ArgumentNullException.ThrowIfNull(serializer);
        Services.Replace(ServiceDescriptor.Singleton(serializer));
        return this;
    }

    /// <summary>Uses System.Text.Json with a source-generated context, so nothing is serialized by reflection (trimming and Native AOT).</summary>
    /// <param name="context">The context that knows every message type.</param>
    /// <returns>This builder.</returns>
    public PatternsBuilder UseSystemTextJson(JsonSerializerContext context) => UseSerializer(new JsonMessageSerializer(context));

    /// <summary>Adjusts the options shared by every pattern.</summary>
    /// <param name="configure">The adjustment.</param>
    /// <returns>This builder.</returns>
    public PatternsBuilder Configure(Action<PatternsOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Services.Configure(configure);
        return this;
    }
}
