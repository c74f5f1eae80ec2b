using Microsoft.Extensions.DependencyInjection;
using Patterns.Hosting;
using Patterns.PubSub;
using Patterns.Queues;
using Patterns.RequestResponse;

namespace Microsoft.Extensions.Hosting;

/// <summary>Short forms of the Patterns registrations on an <see cref="IHostApplicationBuilder"/>.</summary>
public static class PatternsHostApplicationBuilderExtensions
{
    /// <summary>Adds the shared Patterns services and chooses the transport and serializer.</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Chooses the transport and serializer.</param>
    /// <returns>The Patterns builder, for plug-in extensions.</returns>
    public static PatternsBuilder AddPatterns(this IHostApplicationBuilder builder, Action<PatternsBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Services.AddPatterns(configure);
    }

    /// <summary>Adds request-response.</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Registers handlers.</param>
    /// <returns>The request-response builder.</returns>
    public static RequestResponseBuilder AddRequestResponse(this IHostApplicationBuilder builder, Action<RequestResponseBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Services.AddRequestResponse(configure);
    }

    /// <summary>Adds pub/sub.</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Registers subscriptions.</param>
    /// <returns>The pub/sub builder.</returns>
    public static PubSubBuilder AddPubSub(this IHostApplicationBuilder builder, Action<PubSubBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Services.AddPubSub(configure);
    }

    /// <summary>Adds message queues.</summary>
    /// <param name="builder">The host builder.</param>
    /// <param name="configure">Declares queues and registers consumers.</param>
    /// <returns>The queue builder.</returns>
    public static MessageQueueBuilder AddMessageQueue(this IHostApplicationBuilder builder, Action<MessageQueueBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        return builder.Services.AddMessageQueue(configure);
    }
}
