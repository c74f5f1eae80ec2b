using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Serialization;
using Patterns.Transport;

namespace Patterns.Gateway.Push;

/// <summary>The gateway's topic feeds and the count of open push connections.</summary>
internal sealed class PushHub(IServiceProvider services, IOptions<PushHubOptions> options, TimeProvider timeProvider, ILogger<PushHub> logger) : IAsyncDisposable
{
    private readonly ConcurrentDictionary<string, TopicFeed> _feeds = new(StringComparer.Ordinal);
    private int _connections;

    public TimeProvider Time => timeProvider;

    public ILogger Logger => logger;

    public int Connections => Volatile.Read(ref _connections);

    public async ValueTask<TopicFeed> FeedAsync(string topic, CancellationToken cancellationToken)
    {
        var feed = _feeds.GetOrAdd(topic, static (t, s) => new TopicFeed(t, s.options.Value.ReplayCount, s.services.GetRequiredService<IMessageSerializer>()), (options, services));
        await feed.EnsureSubscribedAsync(services.GetRequiredService<MessageTransport>(), cancellationToken).ConfigureAwait(false);
        return feed;
    }

    public bool TryOpen()
    {
        if (Interlocked.Increment(ref _connections) <= options.Value.MaxConnections)
        {
            return true;
        }

        Interlocked.Decrement(ref _connections);
        return false;
    }

    public void Close() => Interlocked.Decrement(ref _connections);

    public async ValueTask DisposeAsync()
    {
        foreach (var feed in _feeds.Values)
        {
            await feed.DisposeAsync().ConfigureAwait(false);
        }
    }
}
