using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Patterns.Hosting;
using Patterns.Transport;

namespace Patterns.Testing;

/// <summary>Registers the test utilities on the shared Patterns builder.</summary>
public static class PatternsTestingExtensions
{
    /// <summary>
    /// Records the traffic of whatever transport is configured (call it after choosing the transport) into
    /// a <see cref="PatternsTestHarness"/> singleton.
    /// </summary>
    /// <param name="builder">The Patterns builder.</param>
    /// <returns>The builder.</returns>
    public static PatternsBuilder UseTestHarness(this PatternsBuilder builder)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var services = builder.Services;
        services.TryAddSingleton<PatternsTestHarness>();
        var current = services.LastOrDefault(d => d.ServiceType == typeof(MessageTransport))
            ?? throw new InvalidOperationException("No transport is registered; call AddPatterns() first.");
        if (current.ImplementationFactory is { } factory && factory.Target is HarnessMarker)
        {
            return builder;
        }

        var inner = current.ImplementationFactory
            ?? (current.ImplementationInstance is MessageTransport instance
                ? _ => instance
                : throw new InvalidOperationException("The registered transport must be registered with a factory or an instance."));
        var marker = new HarnessMarker(inner);
        services.Replace(ServiceDescriptor.Singleton<MessageTransport>(marker.Create));
        return builder;
    }

    /// <summary>Virtual time for every pattern: registers <paramref name="timeProvider"/> as the host's <see cref="TimeProvider"/>.</summary>
    /// <param name="builder">The Patterns builder.</param>
    /// <param name="timeProvider">The clock tests move by hand.</param>
    /// <returns>The builder.</returns>
    public static PatternsBuilder UseTimeProvider(this PatternsBuilder builder, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(timeProvider);
        builder.Services.Replace(ServiceDescriptor.Singleton(timeProvider));
        return builder;
    }

    private sealed class HarnessMarker(Func<IServiceProvider, object> inner)
    {
        public MessageTransport Create(IServiceProvider services) =>
            new RecordingTransport((MessageTransport)inner(services), services.GetRequiredService<PatternsTestHarness>());
    }
}
