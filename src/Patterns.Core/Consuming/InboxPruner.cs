using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Patterns.Hosting;
using Patterns.Storage;

namespace Patterns.Consuming;

/// <summary>Removes handled message ids older than <see cref="PatternsOptions.InboxRetention"/> from the durable inbox, periodically.</summary>
internal sealed partial class InboxPruner(IServiceProvider services, IOptions<PatternsOptions> options, TimeProvider timeProvider, ILoggerFactory loggerFactory)
    : BackgroundService
{
    private static readonly TimeSpan MaxInterval = TimeSpan.FromHours(1);

    private readonly ILogger _logger = loggerFactory.CreateLogger("Patterns.Inbox");

    protected override Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var retention = options.Value.InboxRetention;
        if (retention == Timeout.InfiniteTimeSpan || services.GetService<IInboxStore>() is not { } inbox)
        {
            return Task.CompletedTask;
        }

        return RunAsync(inbox, retention, retention < MaxInterval ? retention : MaxInterval, stoppingToken);
    }

    private async Task RunAsync(IInboxStore inbox, TimeSpan retention, TimeSpan interval, CancellationToken stopping)
    {
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await Task.Delay(interval, timeProvider, stopping).ConfigureAwait(false);
                var removed = await inbox.PruneAsync(timeProvider.GetUtcNow() - retention, stopping).ConfigureAwait(false);
                if (removed > 0)
                {
                    Pruned(_logger, removed, retention);
                }
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                // The store failed: try again at the next pass; nothing is lost by pruning later.
                PruneFailed(_logger, ex);
            }
        }
    }

    [LoggerMessage(EventId = 4201, Level = LogLevel.Debug, Message = "Removed {Count} handled message id(s) older than {Retention} from the inbox.")]
    private static partial void Pruned(ILogger logger, long count, TimeSpan retention);

    [LoggerMessage(EventId = 4202, Level = LogLevel.Warning, Message = "Pruning the inbox failed; it is tried again at the next pass.")]
    private static partial void PruneFailed(ILogger logger, Exception exception);
}
