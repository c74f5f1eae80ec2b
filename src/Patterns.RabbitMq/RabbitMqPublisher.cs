using Patterns.Messaging;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using RabbitMQ.Client.Events;
using RabbitMQ.Client.Exceptions;

namespace Patterns.RabbitMq;

/// <summary>What the broker said about one publish.</summary>
internal enum PublishOutcome
{
    /// <summary>Stored (confirmed), or written when confirms are off.</summary>
    Accepted,

    /// <summary>Returned: no queue matched (mandatory publish).</summary>
    Unroutable,

    /// <summary>Refused (negative confirm), for example by a full queue that rejects publishes.</summary>
    Refused,
}

/// <summary>
/// Publishes on a small pool of channels with publisher confirms. A publish whose connection drops before
/// the confirm is published again once the connection is back (the broker may then hold it twice: at-least-once),
/// for at most the reconnect timeout.
/// </summary>
internal sealed class RabbitMqPublisher : IAsyncDisposable
{
    private readonly RabbitMqConnection _connection;
    private readonly RabbitMqTransportOptions _options;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly IChannel?[] _channels;
    private readonly SemaphoreSlim _channelGate = new(1, 1);
    private int _next;

    public RabbitMqPublisher(RabbitMqConnection connection, RabbitMqTransportOptions options, TimeProvider timeProvider, ILogger logger)
    {
        _connection = connection;
        _options = options;
        _timeProvider = timeProvider;
        _logger = logger;
        _channels = new IChannel?[options.PublisherChannels];
    }

    /// <summary>Picks the channel for a message: by partition key (so a key's messages keep their order), else round-robin.</summary>
    public int ChannelFor(string? partitionKey) =>
        _channels.Length == 1
            ? 0
            : partitionKey is null
                ? (int)((uint)Interlocked.Increment(ref _next) % (uint)_channels.Length)
                : PartitionHash.Partition(partitionKey, _channels.Length);

    public async ValueTask<PublishOutcome> PublishAsync(
        string exchange, string routingKey, BasicProperties properties, ReadOnlyMemory<byte> body, int channelIndex, CancellationToken cancellationToken)
    {
        // A message for a queue is always mandatory, so one for a queue that does not exist is returned rather than
        // dropped: with confirms the send fails; without them the return is logged (OnReturnAsync). A topic publish is
        // mandatory with confirms only, where being returned means "nobody subscribes" and is the publish's result.
        var mandatory = _options.PublisherConfirms || exchange.Length == 0;
        long? firstFailure = null;
        while (true)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var channel = _channels[channelIndex] is { IsOpen: true } open && _connection.IsUsable
                ? open
                : await GetChannelAsync(channelIndex, cancellationToken).ConfigureAwait(false);
            try
            {
                await channel.BasicPublishAsync(exchange, routingKey, mandatory, properties, body, cancellationToken).ConfigureAwait(false);
                return PublishOutcome.Accepted;
            }
            catch (PublishException ex)
            {
                return ex.IsReturn ? PublishOutcome.Unroutable : PublishOutcome.Refused;
            }
            catch (OperationInterruptedException ex) when (RabbitMqConnection.IsChannelError(ex.ShutdownReason))
            {
                // The broker closed the channel over this publish (an exchange that does not exist, for example).
                // The channel is not recovered by the client: make a new one next time.
                throw new InvalidOperationException(
                    $"RabbitMQ refused a message for exchange '{exchange}' with routing key '{routingKey}': {ex.ShutdownReason?.ReplyText}", ex);
            }
            catch (Exception ex) when (RabbitMqConnection.IsConnectivity(ex) || (ex is OperationCanceledException && !cancellationToken.IsCancellationRequested))
            {
                // The connection went away before the confirm: the broker may or may not have the message, so it is
                // published again when the connection is back (the consumer side sees the same message id twice at worst).
                firstFailure ??= _timeProvider.GetTimestamp();
                if (_timeProvider.GetElapsedTime(firstFailure.Value) >= _options.ReconnectTimeout)
                {
                    throw _connection.Unavailable(ex);
                }

                await WaitBeforeRetryAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        for (var i = 0; i < _channels.Length; i++)
        {
            if (Interlocked.Exchange(ref _channels[i], null) is { } channel)
            {
                await CloseQuietlyAsync(channel).ConfigureAwait(false);
            }
        }

        _channelGate.Dispose();
    }

    internal static async ValueTask CloseQuietlyAsync(IChannel channel)
    {
        try
        {
            if (channel.IsOpen)
            {
                await channel.CloseAsync().ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (RabbitMqConnection.IsConnectivity(ex) || ex is OperationInterruptedException or OperationCanceledException)
        {
            // The channel is gone already.
        }

        await channel.DisposeAsync().ConfigureAwait(false);
    }

    private Task OnReturnAsync(object sender, BasicReturnEventArgs args)
    {
        // Without confirms the send completed before the broker returned the message: all that is left is to say so.
        RabbitMqLog.Returned(_logger, args.BasicProperties.MessageId, args.Exchange, args.RoutingKey, args.ReplyCode, args.ReplyText);
        return Task.CompletedTask;
    }

    private async Task WaitBeforeRetryAsync(CancellationToken cancellationToken)
    {
        if (_connection.IsUsable)
        {
            // The connection is up but this channel was not: give recovery a moment.
            await Task.Delay(TimeSpan.FromMilliseconds(50), _timeProvider, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await _connection.WaitUntilUsableAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private async ValueTask<IChannel> GetChannelAsync(int index, CancellationToken cancellationToken)
    {
        var connection = await _connection.GetAsync(cancellationToken).ConfigureAwait(false);
        await _channelGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_channels[index] is { } existing)
            {
                if (existing.IsOpen || !_connection.IsUsable)
                {
                    // Open, or closed with the connection and about to be recovered with it.
                    return existing;
                }

                // Closed on its own (a channel error) while the connection is fine: the client does not recover it.
                _channels[index] = null;
                await CloseQuietlyAsync(existing).ConfigureAwait(false);
            }

            var channel = await connection.CreateChannelAsync(
                new CreateChannelOptions(
                    publisherConfirmationsEnabled: _options.PublisherConfirms,
                    publisherConfirmationTrackingEnabled: _options.PublisherConfirms,
                    outstandingPublisherConfirmationsRateLimiter: null),
                cancellationToken).ConfigureAwait(false);
            if (!_options.PublisherConfirms)
            {
                channel.BasicReturnAsync += OnReturnAsync;
            }

            _channels[index] = channel;
            return channel;
        }
        finally
        {
            _channelGate.Release();
        }
    }
}
