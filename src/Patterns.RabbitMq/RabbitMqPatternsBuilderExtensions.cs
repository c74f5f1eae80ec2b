using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.RabbitMq;
using Patterns.Serialization;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Chooses RabbitMQ as the transport of every pattern.</summary>
public static class RabbitMqPatternsBuilderExtensions
{
    /// <summary>Uses the RabbitMQ broker at <paramref name="uri"/>: request-response, pub/sub and queues travel through it, with the same handlers.</summary>
    /// <param name="builder">The Patterns builder.</param>
    /// <param name="uri">The broker address, for example <c>amqp://guest:guest@localhost:5672/</c>.</param>
    /// <returns>The builder.</returns>
    public static PatternsBuilder UseRabbitMq(this PatternsBuilder builder, string uri)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(uri);
        if (!Uri.TryCreate(uri, UriKind.Absolute, out var parsed))
        {
            throw new ArgumentException($"'{uri}' is not an absolute amqp:// or amqps:// address.", nameof(uri));
        }

        return builder.UseRabbitMq(o => o.Uri = parsed);
    }

    /// <summary>Uses RabbitMQ as the transport, configured by <paramref name="configure"/>. The options are validated when the host starts.</summary>
    /// <param name="builder">The Patterns builder.</param>
    /// <param name="configure">Sets the options; <see cref="RabbitMqTransportOptions.Uri"/> is required.</param>
    /// <returns>The builder.</returns>
    /// <remarks>Inbox de-duplication is the same on every transport: see <see cref="PatternsOptions.Deduplicate"/>.</remarks>
    public static PatternsBuilder UseRabbitMq(this PatternsBuilder builder, Action<RabbitMqTransportOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        var services = builder.Services;
        services.Configure(configure);
        services.AddOptions<RabbitMqTransportOptions>().ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RabbitMqTransportOptions>, RabbitMqTransportOptionsValidator>());
        return builder.UseTransport(static sp => new RabbitMqMessageTransport(
            sp.GetRequiredService<IOptions<RabbitMqTransportOptions>>().Value,
            sp.GetRequiredService<IMessageSerializer>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance));
    }
}
