using Microsoft.Extensions.Logging;
using Patterns.Hosting;
using Patterns.Storage;
using Patterns.Transport;

namespace Patterns.Consuming;

/// <summary>
/// Puts the kernel's <see cref="ConsumerPath"/> between a transport and every handler that subscribes through Patterns
/// (consumers, batch consumers, request handlers, streaming sources, reply queues), so each behaves the same on every
/// transport.
/// </summary>
internal sealed class ConsumerPaths
{
    private readonly Lazy<(IInboxStore? Inbox, TimeSpan RetryDelay)> _settings;
    private readonly TimeProvider _timeProvider;
    private readonly ILoggerFactory _loggerFactory;

    /// <param name="options">Read when the first subscription starts (after the options were validated), not before.</param>
    /// <param name="inbox">Finds the registered inbox store, if any; called only with de-duplication on.</param>
    /// <param name="timeProvider">The clock.</param>
    /// <param name="loggerFactory">Where the paths log.</param>
    public ConsumerPaths(Func<PatternsOptions> options, Func<IInboxStore?> inbox, TimeProvider timeProvider, ILoggerFactory loggerFactory)
    {
        _settings = new(() =>
        {
            var value = options();
            return (value.Deduplicate ? inbox() ?? new InMemoryInboxStore(value.InboxCapacity, timeProvider) : null, value.InboxRetryDelay);
        });
        _timeProvider = timeProvider;
        _loggerFactory = loggerFactory;
    }

    public ConsumerPaths(PatternsOptions options, IInboxStore? inbox, TimeProvider timeProvider, ILoggerFactory loggerFactory)
        : this(() => options, () => inbox, timeProvider, loggerFactory)
    {
    }

    /// <summary>Gets the inbox the paths de-duplicate with; <see langword="null"/> without de-duplication.</summary>
    public IInboxStore? Inbox => _settings.Value.Inbox;

    /// <summary>Wraps a handler in the consumer path of the subscription <paramref name="request"/> asks for.</summary>
    public DeliveryHandler Wrap(MessageTransport transport, SubscriptionRequest request, DeliveryHandler handler)
    {
        var (inbox, retryDelay) = _settings.Value;
        return new ConsumerPath(request, handler, inbox, retryDelay, _timeProvider, _loggerFactory.CreateLogger("Patterns.Consumers." + request.ConsumerGroup), transport.SystemName).HandleAsync;
    }

    /// <summary>Subscribes on the transport through the consumer path.</summary>
    public ValueTask<TransportSubscription> SubscribeAsync(MessageTransport transport, SubscriptionRequest request, DeliveryHandler handler, CancellationToken cancellationToken) =>
        transport.SubscribeAsync(request, Wrap(transport, request, handler), cancellationToken);
}
